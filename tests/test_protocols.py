import math

import numpy as np
import pytest

from adlkit import data as D


@pytest.fixture
def splits(small_root):
    return D.MVTecLike(small_root, "all", "train", 32), D.MVTecLike(small_root, "all", "test", 32)


@pytest.mark.parametrize("ratio,n_good,expected", [(0.0, 100, 0), (0.1, 100, 11), (0.2, 209, 52), (0.05, 19, 1)])
def test_n_contaminated_formula(ratio, n_good, expected):
    assert D.n_contaminated(ratio, n_good) == expected == math.floor(ratio / (1 - ratio) * n_good + 1e-9)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_bad_ratio(ratio):
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        D.n_contaminated(ratio, 10)


def test_contamination_exact_counts_leak_free(splits):
    train, test = splits
    c_train, c_test, rep = D.contaminate(train, test, 0.2, seed=1)
    n_c = D.n_contaminated(0.2, 12)  # per class
    assert rep.by_class == {"tile": n_c, "washer": n_c} and rep.n_contaminated == 2 * n_c
    added = c_train.samples[len(train):]
    assert len(added) == 2 * n_c
    assert all(s.label == 0 and s.truth == 1 and s.noise_std == 2.0 for s in added)
    moved = {str(s.path) for s in added}
    assert moved == set(rep.moved)
    assert not moved & {str(s.path) for s in c_test.samples}
    assert len(c_test) == len(test) - 2 * n_c == rep.test_after
    for cls in ("tile", "washer"):  # the contaminated images come from their own class
        assert all(s.class_name == cls for s in added if "/" + cls + "/" in str(s.path))


def test_leaky_variant_keeps_originals_in_test(splits):
    train, test = splits
    _, c_test, rep = D.contaminate(train, test, 0.2, seed=1, leaky=True)
    assert len(c_test) == len(test) and set(rep.moved) <= {str(s.path) for s in c_test.samples}


def test_contamination_is_seeded(splits):
    train, test = splits
    a = D.contaminate(train, test, 0.2, seed=1)[2].moved
    assert a == D.contaminate(train, test, 0.2, seed=1)[2].moved
    assert any(D.contaminate(train, test, 0.2, seed=s)[2].moved != a for s in range(2, 6))


def test_contaminated_images_carry_small_noise(splits):
    train, test = splits
    c_train, _, _ = D.contaminate(train, test, 0.2, seed=1)
    s = c_train.samples[-1]
    noisy = c_train.load_image(s).float()
    clean = test.load_image(D.Sample(s.path, 1, s.class_name)).float()
    diff = (noisy - clean).flatten()
    assert 0.5 < diff.std() < 4.0 and abs(diff.mean()) < 0.5
    assert np.array_equal(c_train.load_image(s).numpy(), noisy.byte().numpy())  # same noise every load


def test_too_few_anomalies(splits):
    train, test = splits
    with pytest.raises(ValueError, match="needs .* anomalies but the test set has only"):
        D.contaminate(train, test, 0.9)


def test_few_shot_never_in_test(splits):
    _, test = splits
    shots, rest, rep = D.few_shot(test, 2, seed=0)
    assert len(shots) == 4 and rep.by_class == {"tile": 2, "washer": 2}
    assert all(s.truth == 1 and s.mask_path is not None for s in shots.samples)
    assert not {s.path for s in shots.samples} & {s.path for s in rest.samples}
    assert len(rest) + len(shots) == len(test)
    assert D.few_shot(test, 2, seed=0)[2].shots == rep.shots
    with pytest.raises(ValueError, match="labelled anomalies"):
        D.few_shot(test, 100)
