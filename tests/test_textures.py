"""ADLKIT_TEXTURES: a folder of real textures (e.g. DTD) as the anomaly sources of PseudoAnomaly."""
import pytest
import torch
from PIL import Image

from adlkit import config
from adlkit.synth import PseudoAnomaly

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


@pytest.fixture
def texture_folder(tmp_path):
    """Three flat-colour PNGs (of different sizes, one in a sub-folder as in DTD's images/<class>/)."""
    folder = tmp_path / "dtd"
    (folder / "banded").mkdir(parents=True)
    for k, (colour, size) in enumerate(zip(COLOURS, [(80, 60), (64, 64), (50, 90)])):
        where = folder / "banded" if k == 0 else folder
        Image.new("RGB", size, colour).save(where / f"texture_{k}.png")
    return folder


def test_sources_come_from_the_folder_named_by_adlkit_textures(texture_folder, monkeypatch):
    monkeypatch.setenv("ADLKIT_TEXTURES", str(texture_folder))
    assert config.textures_dir() == texture_folder
    pa = PseudoAnomaly(64)
    # the folder's name, not its path: result files must not record paths outside the repository
    assert f"'{texture_folder.name}'" in pa.source_kind and str(texture_folder) not in pa.source_kind
    assert "3 images" in pa.source_kind
    assert "ADLKIT_TEXTURES" in pa.source_kind and pa.source_kind in repr(pa)
    assert pa.sources.shape == (3, 3, 64, 64) and pa.sources.dtype == torch.uint8
    # every source is one of the flat colours, and all three are there
    colours = {tuple(int(v) for v in s[:, 32, 32]) for s in pa.sources}
    assert colours == set(COLOURS)
    assert all((s == s[:, :1, :1]).all() for s in pa.sources)
    images, masks, labels = pa(torch.full((2, 3, 64, 64), 0.5), torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 64, 64) and labels.all()


def test_an_explicit_source_wins_over_adlkit_textures(texture_folder, monkeypatch):
    monkeypatch.setenv("ADLKIT_TEXTURES", str(texture_folder))
    tensor = torch.zeros(5, 3, 32, 32, dtype=torch.uint8)
    assert PseudoAnomaly(32, sources=tensor).source_kind == "tensor of 5 images"


@pytest.mark.parametrize("value", [None, "", "  "])
def test_unset_means_built_in_sources(value, monkeypatch):
    if value is None:
        monkeypatch.delenv("ADLKIT_TEXTURES", raising=False)
    else:
        monkeypatch.setenv("ADLKIT_TEXTURES", value)
    assert config.textures_dir() is None
    assert PseudoAnomaly(32).source_kind.startswith("built-in")


def test_a_missing_folder_is_an_error_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("ADLKIT_TEXTURES", str(tmp_path / "no_such_folder"))
    with pytest.raises(ValueError, match="ADLKIT_TEXTURES.*not a folder.*unset ADLKIT_TEXTURES"):
        config.textures_dir()
    with pytest.raises(ValueError, match="ADLKIT_TEXTURES"):
        PseudoAnomaly(32)

