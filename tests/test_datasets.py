import builtins
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from adlkit import data as D


@pytest.fixture
def copy_root(small_root, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(small_root, dst)
    return dst


def test_items_have_images_masks_labels(small_root):
    test = D.MVTecLike(small_root, "washer", "test", image_size=48)
    item = test[len(test) - 1]
    assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["mask"].shape == (1, 48, 48) and set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    assert item["label"] == 1 == item["anomalous"] and item["defect"] != "good" and item["class_name"] == "washer"
    good = test[next(i for i, s in enumerate(test.samples) if s.defect == "good")]
    assert good["label"] == 0 and good["mask"].sum() == 0
    both = D.MVTecLike(small_root, "all", "train", image_size=32)
    assert set(both.class_names) == {"tile", "washer"} and len(both) == 24


def test_grayscale_images_become_three_channels(tmp_path):
    root = tmp_path / "gray"
    (root / "part" / "train" / "good").mkdir(parents=True)
    (root / "part" / "test" / "good").mkdir(parents=True)
    Image.fromarray(np.full((20, 30), 128, np.uint8)).save(root / "part" / "train" / "good" / "000.png")
    ds = D.MVTecLike(root, "part", "train", image_size=16)
    assert ds[0]["image"].shape == (3, 16, 16)
    assert D.MVTecLike(root, "part", "train", image_size=None)[0]["image"].shape == (3, 20, 30)


def test_nonexistent_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)does not exist.*Expected layout"):
        D.MVTecLike(tmp_path / "nope", "bottle")


def test_root_without_train_good(tmp_path):
    (tmp_path / "bottle" / "test").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="(?s)no category folder with train/good.*Expected layout"):
        D.MVTecLike(tmp_path, "bottle")


def test_missing_category_lists_available(small_root):
    with pytest.raises(ValueError, match=r"'bottle' is not in .*available categories: \['tile', 'washer'\]"):
        D.MVTecLike(small_root, "bottle")


def test_defect_image_without_mask(copy_root):
    mask = next((copy_root / "tile" / "ground_truth").rglob("*_mask.png"))
    mask.unlink()
    with pytest.raises(FileNotFoundError, match=f"has no mask: expected .*{mask.name}"):
        D.MVTecLike(copy_root, "tile", "test")


def test_mask_of_another_size(copy_root):
    mask = next((copy_root / "tile" / "ground_truth").rglob("*_mask.png"))
    Image.open(mask).resize((32, 32)).save(mask)
    ds = D.MVTecLike(copy_root, "tile", "test", image_size=64)
    index = next(i for i, s in enumerate(ds.samples) if s.mask_path == mask)
    with pytest.raises(ValueError, match="is 32x32 but its image .* is 64x64"):
        ds[index]


def test_unreadable_image_is_named(copy_root):
    bad = copy_root / "washer" / "train" / "good" / "001.png"
    bad.write_bytes(b"not a png at all")
    ds = D.MVTecLike(copy_root, "washer", "train")
    with pytest.raises(OSError, match="cannot read image .*001.png"):
        ds[1]


def test_elpv_missing_package_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "elpv_dataset":
            raise ImportError("No module named 'elpv_dataset'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install 'adlkit\[elpv\]'"):
        D.elpv()


def test_elpv_when_installed():
    pytest.importorskip("elpv_dataset", reason="elpv-dataset not installed (pip install 'adlkit[elpv]')")
    ds = D.elpv(image_size=32)
    assert len(ds) == 2624 and set(ds.class_names) == {"mono", "poly"}
    probs = np.array([s.meta["defect_probability"] for s in ds.samples])
    assert np.array_equal(ds.truths, (probs >= 0.5).astype(int))
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and item["mask"].sum() == 0
    assert len(D.elpv(image_size=32, cell_type="mono")) < len(ds)


def test_visa_split_csv(tmp_path):
    root = tmp_path / "VisA"
    for rel in ("candle/Data/Images/Normal/0000.JPG", "candle/Data/Images/Anomaly/0001.JPG",
                "candle/Data/Images/Normal/0002.JPG"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(root / rel, format="JPEG")
    (root / "candle/Data/Masks/Anomaly").mkdir(parents=True)
    m = np.zeros((24, 24), np.uint8)
    m[4:8, 4:8] = 1  # VisA masks may use 1, not 255
    Image.fromarray(m).save(root / "candle/Data/Masks/Anomaly/0001.png")
    (root / "split_csv").mkdir()
    (root / "split_csv" / "1cls.csv").write_text(
        "object,split,label,image,mask\n"
        "candle,train,normal,candle/Data/Images/Normal/0000.JPG,\n"
        "candle,test,anomaly,candle/Data/Images/Anomaly/0001.JPG,candle/Data/Masks/Anomaly/0001.png\n"
        "candle,test,normal,candle/Data/Images/Normal/0002.JPG,\n")
    test = D.visa_from_split_csv(root, "candle", "test", image_size=24)
    assert len(test) == 2 and list(test.truths) == [1, 0]
    assert test[0]["mask"].sum() == 16
    assert len(D.visa_from_split_csv(root, "candle", "train")) == 1
    with pytest.raises(ValueError, match=r"available categories: \['candle'\]"):
        D.visa_from_split_csv(root, "pcb1")
    with pytest.raises(FileNotFoundError, match="split file"):
        D.visa_from_split_csv(tmp_path, "candle")


def test_tensor_cache_matches_dataset(small_root):
    ds = D.MVTecLike(small_root, "tile", "test", image_size=32)
    cache = D.cache_tensors(ds, "cpu")
    assert cache.images.dtype == torch.uint8 and cache.images.shape == (len(ds), 3, 32, 32)
    batch = cache.batch(torch.tensor([0, len(ds) - 1]))
    assert torch.allclose(batch["image"][1], ds[len(ds) - 1]["image"])
    assert torch.equal(batch["mask"][1], ds[len(ds) - 1]["mask"])
    seen = torch.cat([b["index"] for b in cache.batches(5, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(len(ds)))


# -- the magnetic-tile set, in its published layout (MT_<Type>/Imgs/<stem>.jpg + <stem>.png)
MTD_COUNTS = {"Free": 10, "Blowhole": 2, "Break": 2, "Crack": 1, "Fray": 1, "Uneven": 2}


def write_magnetic_tile(root, counts=MTD_COUNTS, size=(30, 20)):
    """A tiny copy of the layout: grayscale jpgs of varying size, anti-aliased masks like the originals'."""
    rng = np.random.default_rng(0)
    for kind, n in counts.items():
        folder = root / f"MT_{kind}" / "Imgs"
        folder.mkdir(parents=True)
        for i in range(n):
            w, h = size[0] + i, size[1] + 2 * i  # sizes vary, as in the source
            Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(folder / f"exp0_num_{i}.jpg")
            m = np.zeros((h, w), np.uint8)
            if kind != "Free":
                m[2:8, 2:8] = 255
                m[8, 2:8] = 60  # an anti-aliased edge: below half, not a defect pixel
            Image.fromarray(m).save(folder / f"exp0_num_{i}.png")
    return root


def test_magnetic_tile_reads_the_published_layout_with_a_fixed_split(tmp_path):
    root = write_magnetic_tile(tmp_path / "Magnetic-tile-defect-datasets.")
    train, test = D.magnetic_tile(root, "train", 16), D.magnetic_tile(root, "test", 16)
    assert len(train) == 7 and train.truths.sum() == 0  # 70% of the 10 defect-free tiles
    assert len(test) == 3 + 8 and test.truths.sum() == 8  # the other 3 and every defect image
    assert sorted({s.defect for s in test.samples}) == ["blowhole", "break", "crack", "fray", "good", "uneven"]
    assert {s.class_name for s in train.samples + test.samples} == {"magnetic_tile"}
    # fixed: the run's seed does not enter; a second read gives the same files on each side
    assert [s.path for s in D.magnetic_tile(root, "train", 16).samples] == [s.path for s in train.samples]
    assert not {s.path for s in train.samples} & {s.path for s in test.samples}
    item = test[len(test) - 1]
    assert item["image"].shape == (3, 16, 16) and item["mask"].shape == (1, 16, 16) and item["label"] == 1
    full = D.magnetic_tile(root, "test", None)
    s = full.samples[-1]
    mask = full.load_mask(s)
    assert mask.shape[-2:] == Image.open(s.path).size[::-1]
    assert int(mask.sum()) == 36  # the 6x6 square; the edge row at 60 (< half) is not a defect pixel
    good = test[next(i for i, s in enumerate(test.samples) if s.defect == "good")]
    assert good["mask"].sum() == 0 and good["label"] == 0


def test_magnetic_tile_errors_name_the_problem_and_show_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)does not exist.*MT_Free/Imgs"):
        D.magnetic_tile(tmp_path / "nope")
    root = write_magnetic_tile(tmp_path / "mtd")
    shutil.rmtree(root / "MT_Crack")
    with pytest.raises(FileNotFoundError, match="(?s)missing MT_Crack/Imgs.*git clone"):
        D.magnetic_tile(root, "test")
    root = write_magnetic_tile(tmp_path / "mtd2")
    (root / "MT_Fray" / "Imgs" / "exp0_num_0.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"exp0_num_0.jpg has no mask: expected .*exp0_num_0.png"):
        D.magnetic_tile(root, "test")
    root = write_magnetic_tile(tmp_path / "mtd3")
    bad = root / "MT_Break" / "Imgs" / "exp0_num_1.jpg"
    bad.write_bytes(b"not a jpeg")
    test = D.magnetic_tile(root, "test", 16)
    with pytest.raises(OSError, match="cannot read image .*exp0_num_1.jpg"):
        test[next(i for i, s in enumerate(test.samples) if s.path == bad)]
    root = write_magnetic_tile(tmp_path / "mtd4")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "MT_Uneven" / "Imgs" / "exp0_num_0.png")
    test = D.magnetic_tile(root, "test", 16)
    with pytest.raises(ValueError, match="mask .*exp0_num_0.png is 5x5 but its image"):
        test[next(i for i, s in enumerate(test.samples) if s.defect == "uneven")]
