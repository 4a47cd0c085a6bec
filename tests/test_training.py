"""adlkit.training: checkpoints that resume exactly, runs that are never replaced by accident, result
files that always hold whole runs."""

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from torch import nn

from adlkit import training


@dataclass
class Cfg:
    lr: float = 1e-2
    epochs: int = 3
    sizes: tuple = (3, 2)
    seed: int = 0


def _setup(config: Cfg):
    """A model, its optimizer and generators, built from ``config`` like a method's loop does."""
    gens = training.generators(config.seed)
    with training.seeded(config.seed):
        model = nn.Linear(*config.sizes)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    return model, opt, gens


def _epoch(model, opt, gens):
    x = torch.randn(8, model.in_features, generator=gens["cpu"])
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def _run(config: Cfg, path=None, stop_after=None, resume=False, overwrite=False):
    model, opt, gens = _setup(config)
    states = {"model": model, "opt": opt}
    start, history = training.start_or_resume(path, config, states, gens, resume=resume, overwrite=overwrite)
    history = history or training.new_history("loss", tag="x")
    for epoch in range(start, config.epochs):
        training.log_epoch(history, epoch, 0.0, loss=_epoch(model, opt, gens))
        if path is not None:
            training.save_checkpoint(path, config, states, epoch, history, gens)
        if stop_after is not None and epoch >= stop_after:
            break
    return model, opt, gens, history


def test_generators_and_seeded_are_reproducible_and_leave_the_global_rng_alone():
    a, b = training.generators(3), training.generators(3)
    assert torch.equal(torch.rand(5, generator=a["cpu"]), torch.rand(5, generator=b["cpu"]))
    assert torch.equal(torch.rand(5, generator=a["device"]), torch.rand(5, generator=b["device"]))
    assert not torch.equal(torch.rand(5, generator=training.generators(3)["cpu"]),
                           torch.rand(5, generator=training.generators(3)["device"]))  # seed vs seed + 1
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with training.seeded(7):
        first = torch.rand(2)
    assert torch.equal(torch.rand(3), expected)  # the global stream continues as if nothing happened
    with training.seeded(7):
        assert torch.equal(torch.rand(2), first)


def test_save_load_and_resume_round_trip(tmp_path):
    cfg = Cfg()
    path = tmp_path / "ck" / "last.pt"
    full_model, full_opt, full_gens, full_hist = _run(cfg)
    _run(cfg, path, stop_after=0)  # "killed" after epoch 0
    payload = training.load_checkpoint(path)
    assert payload["epoch"] == 0 and payload["history"]["loss"] and payload["history"]["tag"] == "x"
    assert training.config_from_json(Cfg, payload["config"]) == cfg  # lists come back as tuples
    assert not list(path.parent.glob("*.tmp"))
    model, opt, gens, hist = _run(cfg, path, resume=True)
    assert hist["epoch"] == [0, 1, 2] and hist["loss"] == full_hist["loss"]
    for (name, a), b in zip(full_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(full_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert torch.equal(full_gens["cpu"].get_state(), gens["cpu"].get_state())
    # the last checkpoint holds the last epoch
    assert training.load_checkpoint(path)["epoch"] == 2
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        training.load_checkpoint(tmp_path / "missing.pt")


def test_start_or_resume_never_replaces_a_run_silently(tmp_path):
    cfg = Cfg()
    path = tmp_path / "last.pt"
    model, opt, gens = _setup(cfg)
    states = {"model": model, "opt": opt}
    assert training.start_or_resume(path, cfg, states, gens) == (0, None)  # nothing there yet
    training.save_checkpoint(path, cfg, states, 0, training.new_history("loss"), gens)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="resume=True.*overwrite=True"):
        training.start_or_resume(path, cfg, states, gens)
    assert training.start_or_resume(path, cfg, states, gens, overwrite=True) == (0, None)
    with pytest.raises(ValueError, match=r"another configuration \(lr differ\)"):
        training.start_or_resume(path, replace(cfg, lr=0.5), states, gens, resume=True)
    with pytest.raises(ValueError, match=r"sizes.*differ"):
        training.start_or_resume(path, replace(cfg, sizes=(3, 4)), states, gens, resume=True)
    start, _ = training.start_or_resume(path, replace(cfg, epochs=10), states, gens, resume=True)  # epochs may change
    assert start == 1
    with pytest.raises(FileExistsError, match="overwrite=True"):
        training.save_checkpoint(path, cfg, states, 0, {}, gens, overwrite=False)
    assert path.read_bytes() == before


def test_log_epoch_and_check_finite():
    hist = training.new_history("loss", "w", backbone="b")
    training.log_epoch(hist, 0, 0.0, loss=1.0, w=None)
    assert hist["epoch"] == [0] and hist["loss"] == [1.0] and hist["w"] == [None] and hist["backbone"] == "b"
    assert hist["seconds"] > 0
    training.check_finite(torch.tensor(1.0), "here", "hint")
    with pytest.raises(FloatingPointError, match="nan at epoch 3.*lower the lr"):
        training.check_finite(torch.tensor(float("nan")), "epoch 3", "lower the lr")


def test_append_result_keeps_a_valid_list_after_every_call(tmp_path):
    path = tmp_path / "sub" / "results.json"
    for i in range(3):
        training.append_result(path, {"run": i, "auroc": torch.tensor(0.5 + i / 10), "bad": float("nan")})
        rows = json.loads(path.read_text())
        assert [r["run"] for r in rows] == list(range(i + 1))
        assert rows[-1]["bad"] is None and rows[-1]["auroc"] == pytest.approx(0.5 + i / 10)
        assert not list(path.parent.glob("*.tmp"))
    assert training.read_results(path) == rows
    assert training.read_results(tmp_path / "none.json") == []


def test_write_json_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    training.write_json(path, [{"a": 1}])
    before = path.read_text()
    with pytest.raises(FileExistsError, match="--overwrite"):
        training.write_json(path, [], overwrite=False)

    class Unprintable:
        def __str__(self):
            raise RuntimeError("cannot serialise this")

    with pytest.raises(RuntimeError, match="cannot serialise"):
        training.write_json(path, [{"a": 2, "b": Unprintable()}])
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]

    def half_written(obj, fh, **kw):  # the process dies in the middle of writing
        fh.write('[{"a": 3')
        fh.flush()
        raise KeyboardInterrupt

    monkeypatch.setattr(training.json, "dump", half_written)
    with pytest.raises(KeyboardInterrupt):
        training.write_json(path, [{"a": 3}])
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_read_results_of_a_corrupt_file_names_it(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"method": "adl", ')
    with pytest.raises(ValueError, match="broken.json") as err:
        training.read_results(path)
    assert str(Path(path)) in str(err.value)
    with pytest.raises(ValueError, match="broken.json"):
        training.append_result(path, {"x": 1})  # nothing is appended to a file that cannot be read
    assert path.read_text() == '[{"method": "adl", '
