import numpy as np
import pytest
import torch

import adlkit
from adlkit import config


def test_quick_mode_reads_environment(monkeypatch):
    monkeypatch.delenv("ADLKIT_QUICK", raising=False)
    assert config.quick_mode() is True
    monkeypatch.setenv("ADLKIT_QUICK", "0")
    assert config.quick_mode() is False
    monkeypatch.setenv("ADLKIT_QUICK", "yes")
    assert config.quick_mode() is True
    monkeypatch.setenv("ADLKIT_QUICK", "maybe")
    with pytest.raises(ValueError, match="ADLKIT_QUICK"):
        config.quick_mode()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_requested_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("ADLKIT_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="no CUDA GPU.*Unset ADLKIT_DEVICE"):
        config.device()


def test_device_override_and_bad_name(monkeypatch):
    monkeypatch.setenv("ADLKIT_DEVICE", "cpu")
    assert config.device() == torch.device("cpu")
    monkeypatch.setenv("ADLKIT_DEVICE", "gpu0")
    with pytest.raises(ValueError, match="not a device name"):
        config.device()


def test_seed_everything_reproduces_all_generators():
    def draw():
        g = adlkit.seed_everything(7)
        return np.random.rand(3), torch.rand(3), torch.rand(3, generator=g)

    a, b = draw(), draw()
    for x, y in zip(a, b):
        assert np.allclose(np.asarray(x), np.asarray(y))


def test_paths_follow_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ADLKIT_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("ADLKIT_CACHE", str(tmp_path / "c"))
    assert config.data_dir() == tmp_path / "d"
    assert config.cache_dir() == tmp_path / "c"


def test_git_commit_stamp_ignores_run_outputs_but_not_code(tmp_path, monkeypatch):
    """A run appending to figures/results/ or refreshing book/ keeps the clean stamp; an edited code file marks it."""
    import subprocess

    from adlkit import config

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "figures" / "results").mkdir(parents=True)
    (tmp_path / "figures" / "results" / "cli_x.json").write_text("[]")
    (tmp_path / "book" / "notebooks").mkdir(parents=True)
    (tmp_path / "book" / "notebooks" / "00_a.ipynb").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    monkeypatch.setattr(config, "repo_root", lambda: tmp_path)
    clean = config.git_commit()
    assert clean and "uncommitted" not in clean
    (tmp_path / "figures" / "results" / "cli_x.json").write_text("[{}]")
    (tmp_path / "book" / "notebooks" / "00_a.ipynb").write_text('{"cells": []}')  # an executed copy, refreshed
    assert config.git_commit() == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert config.git_commit() == clean + "+uncommitted changes"
