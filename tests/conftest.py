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
