import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def small_root(tmp_path_factory):
    """A small synthetic dataset (2 classes, 64 px) shared by the data tests."""
    from adlkit.data import synthetic

    root = tmp_path_factory.mktemp("data") / "synth"
    return synthetic(root, image_size=64, seed=3, n_train=12, n_test_good=4, n_test_per_defect=3,
                     classes=("tile", "washer"), verbose=False)


@pytest.fixture(scope="session")
def tile_class(tmp_path_factory):
    """make(seed, n_test_per_defect) -> (train, test) of one small synthetic class ("tile", 64 px, 40 training
    images) for the method tests."""
    from adlkit import data as D

    def make(seed: int, n_test_per_defect: int):
        root = D.synthetic(tmp_path_factory.mktemp(f"tile{seed}") / "s", image_size=64, seed=seed, n_train=40,
                           n_test_good=10, n_test_per_defect=n_test_per_defect, classes=("tile",), verbose=False)
        return D.MVTecLike(root, "tile", "train", 64), D.MVTecLike(root, "tile", "test", 64)

    return make
