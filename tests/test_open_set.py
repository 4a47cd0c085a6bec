from collections import Counter

import pytest

from adlkit import data as D


@pytest.fixture
def tile(small_root):
    """One synthetic category: 12 normal training images; test 4 normal + 3 of each of 4 defect types."""
    return D.MVTecLike(small_root, "tile", "train", 32), D.MVTecLike(small_root, "tile", "test", 32)


def _paths(ds, anomalous_only=False):
    return {str(s.path) for s in ds.samples if s.truth == 1 or not anomalous_only}


def test_anomaly_types(tile):
    assert D.anomaly_types(tile[1]) == ["chip", "crack", "particle", "stain"]
    assert D.anomaly_types(tile[0]) == []


def test_general_setting(tile):
    train, test = tile
    split = D.open_set_split(train, test, "general", shots=5, seed=1)
    assert split.train is train and split.setting == "general" and split.n_shots == 5 and split.seen_class is None
    assert len(split.shots) == 5 and all(s.label == 1 and s.truth == 1 for s in split.shots.samples)
    assert all(s.mask_path is not None for s in split.shots.samples)  # shots keep their masks
    assert not _paths(split.shots) & _paths(split.test)
    assert _paths(split.shots) | _paths(split.test) == _paths(test)
    assert len(split.test) == len(test) - 5 and len(split.seen_rest) == 0
    assert D.anomaly_types(split.test) == D.anomaly_types(test)  # every type is still tested
    assert {s.class_name for s in split.test.samples} == {"tile"}
    assert "general" in split.summary() and "5 labelled" in split.summary()


def test_hard_setting(tile):
    train, test = tile
    split = D.open_set_split(train, test, "hard", shots=2, seed=1, seen_class="crack")
    assert split.setting == "hard" and split.seen_class == "crack"
    assert len(split.shots) == 2 and {s.defect for s in split.shots.samples} == {"crack"}
    assert "crack" not in D.anomaly_types(split.test) and D.anomaly_types(split.test) == ["chip", "particle", "stain"]
    crack = {str(s.path) for s in test.samples if s.defect == "crack"}
    assert _paths(split.seen_rest) == crack - _paths(split.shots) and len(split.seen_rest) == 1
    pieces = [_paths(split.shots), _paths(split.seen_rest), _paths(split.test, anomalous_only=True)]
    assert set.union(*pieces) == _paths(test, anomalous_only=True)
    assert sum(map(len, pieces)) == len(_paths(test, anomalous_only=True))  # disjoint
    n_good = sum(1 for s in test.samples if s.truth == 0)
    assert Counter(s.truth for s in split.test.samples) == {0: n_good, 1: 9}
    assert "hard" in split.summary() and "'crack'" in split.summary() and "seen_rest" in split.summary()


@pytest.mark.parametrize("setting,kw", [("general", {}), ("hard", {"seen_class": "stain"})])
def test_seeded(tile, setting, kw):
    train, test = tile
    shots = lambda seed: [str(s.path) for s in D.open_set_split(train, test, setting, 2, seed, **kw).shots.samples]  # noqa: E731
    assert shots(3) == shots(3)
    assert any(shots(s) != shots(3) for s in range(4, 10))


@pytest.mark.parametrize("kwargs,match", [
    ({"setting": "easy"}, "unknown open-set setting 'easy'.*'general'.*'hard'"),
    ({"shots": 0}, "shots must be a whole number >= 1"),
    ({"shots": 2.5}, "shots must be a whole number >= 1"),
    ({"setting": "general", "seen_class": "crack"}, "only for the 'hard' setting.*Drop seen_class"),
    ({"setting": "hard"}, r"needs seen_class=.*available types: \['chip', 'crack', 'particle', 'stain'\]"),
    ({"setting": "hard", "seen_class": "dent"},
     r"unknown seen class 'dent'.*\['chip', 'crack', 'particle', 'stain'\]"),
    ({"setting": "hard", "seen_class": "crack", "shots": 4},
     "4 shots asked.*only 3 anomalies of the seen type 'crack'.*at most 3"),
    ({"setting": "general", "shots": 13}, "13 shots asked.*only 12 anomalies in total.*at most 12"),
])
def test_errors(tile, kwargs, match):
    with pytest.raises(ValueError, match=match):
        D.open_set_split(*tile, **kwargs)


def test_hard_needs_two_types(tile):
    train, test = tile
    one_type = test.subset([i for i, s in enumerate(test.samples) if s.defect in ("good", "crack")])
    with pytest.raises(ValueError, match=r"at least 2 anomaly types.*only \['crack'\].*setting='general'"):
        D.open_set_split(train, one_type, "hard", shots=1, seen_class="crack")
    assert len(D.open_set_split(train, one_type, "general", shots=1).test) == len(one_type) - 1


def test_no_anomalies(tile):
    with pytest.raises(ValueError, match="holds no anomalies"):
        D.open_set_split(tile[0], tile[0], shots=1)


def test_elpv_open_set_protocol():
    pytest.importorskip("elpv_dataset", reason="elpv-dataset not installed (pip install 'adlkit[elpv]')")
    every = D.elpv(image_size=32)
    probs = Counter(s.meta["defect_probability"] for s in every.samples)
    assert probs[0.0] == 1508 and probs[1.0] == 715 and len(every) - probs[0.0] - probs[1.0] == 401
    train, test = D.elpv(image_size=32, protocol="open_set")
    assert len(train) == 1131 and all(s.truth == 0 and s.defect == "good" for s in train.samples)
    assert Counter(s.defect for s in test.samples) == {"good": 377, "mono": 313, "poly": 402}
    assert {s.class_name for s in train.samples + test.samples} == {"elpv"}
    assert all(s.meta["cell_type"] in ("mono", "poly") for s in train.samples + test.samples)
    assert all(s.meta["cell_type"] == s.defect for s in test.samples if s.truth == 1)
    assert all(s.meta["defect_probability"] == 0.0 for s in train.samples)
    assert not _paths(train) & _paths(test)
    again, _ = D.elpv(image_size=32, protocol="open_set")  # the normal split is fixed, whatever the run seed
    assert [s.path for s in again.samples] == [s.path for s in train.samples]
    split = D.open_set_split(train, test, "hard", shots=10, seed=0, seen_class="mono")
    assert D.anomaly_types(split.test) == ["poly"] and len(split.seen_rest) == 303
    assert D.anomaly_types(D.open_set_split(train, test, "general", shots=10).test) == ["mono", "poly"]


@pytest.mark.parametrize("kwargs,match", [
    ({"protocol": "dra"}, "unknown ELPV protocol 'dra'"),
    ({"protocol": "open_set", "cell_type": "mono"}, "does not apply to protocol='open_set'.*seen_class='mono'"),
    ({"protocol": "open_set", "threshold": 0.3}, "threshold=0.3 does not apply"),
])
def test_elpv_protocol_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):  # raised before the package is needed
        D.elpv(**kwargs)
