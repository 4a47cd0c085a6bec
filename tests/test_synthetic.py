import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from adlkit.data import SYNTHETIC_CLASSES, MVTecLike, categories, render_image, synthetic


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_classes_and_defects_meet_the_design():
    assert len(SYNTHETIC_CLASSES) >= 4
    assert all(len(defects) >= 3 for defects in SYNTHETIC_CLASSES.values())
    assert {"fabric", "metal_plate", "tile"} <= set(SYNTHETIC_CLASSES)  # textures
    assert {"washer", "capsule"} <= set(SYNTHETIC_CLASSES)  # objects


def test_layout_counts_and_masks(small_root):
    assert categories(small_root) == ["tile", "washer"]
    for cls in ("tile", "washer"):
        assert len(list((small_root / cls / "train" / "good").glob("*.png"))) == 12
        test = MVTecLike(small_root, cls, "test", image_size=None)
        assert len(test) == 4 + 3 * len(SYNTHETIC_CLASSES[cls])
        for s in test.samples:
            if s.defect == "good":
                continue
            mask = np.asarray(Image.open(s.mask_path))
            assert mask.shape == (64, 64)
            assert set(np.unique(mask)) <= {0, 255} and (mask > 0).sum() >= 6
            assert np.asarray(Image.open(s.path)).shape == (64, 64, 3)


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    kw = dict(image_size=64, n_train=3, n_test_good=2, n_test_per_defect=1, classes=("capsule",), verbose=False)
    a = synthetic(tmp_path / "a", seed=5, **kw)
    b = synthetic(tmp_path / "b", seed=5, **kw)
    c = synthetic(tmp_path / "c", seed=6, **kw)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_good_and_defective_renders_differ_only_near_the_mask():
    img_good, mask_good = render_image("tile", None, 11, 96)
    assert not mask_good.any()
    for defect in SYNTHETIC_CLASSES["metal_plate"]:
        img, mask = render_image("metal_plate", defect, (1, 2, 3), 96)
        assert img.dtype == np.uint8 and img.shape == (96, 96, 3)
        assert mask.dtype == bool and mask.shape == (96, 96) and mask.sum() >= 6


def test_rerun_reuses_and_never_overwrites(small_root, tmp_path):
    manifest = json.loads((small_root / "adlkit_synthetic.json").read_text())
    stamp = (small_root / "tile" / "train" / "good" / "000.png").stat().st_mtime_ns
    again = synthetic(small_root, image_size=64, seed=3, n_train=12, n_test_good=4, n_test_per_defect=3,
                      classes=("tile", "washer"), verbose=False)
    assert again == small_root
    assert (small_root / "tile" / "train" / "good" / "000.png").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="other settings.*seed.*not overwritten"):
        synthetic(small_root, image_size=64, seed=4, n_train=12, n_test_good=4, n_test_per_defect=3,
                  classes=("tile", "washer"), verbose=False)
    assert json.loads((small_root / "adlkit_synthetic.json").read_text()) == manifest
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my work")
    with pytest.raises(FileExistsError, match="not an adlkit synthetic dataset"):
        synthetic(foreign, image_size=64, verbose=False)
    assert (foreign / "notes.txt").read_text() == "my work"


def test_bad_arguments():
    with pytest.raises(ValueError, match="between 64 and 256"):
        synthetic(image_size=32)
    with pytest.raises(ValueError, match="unknown synthetic classes"):
        synthetic(classes=("bottle",))
    with pytest.raises(ValueError, match="no defect"):
        render_image("tile", "poke", 0)
