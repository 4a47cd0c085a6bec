"""Training-set contamination (the ADL protocol) and few-shot labelled anomalies.

Both are seeded and return a report that lists exactly which files moved where, so a result
can always be traced back to its split.

Contamination (ADL: Das, Pang & Bhuyan, 2024, arXiv:2411.09558, §4.1): with N_good normal
training images and a target ratio epsilon, n_c = floor(epsilon / (1 - epsilon) * N_good)
anomalous *test* images join the training set, labelled normal, each with zero-mean Gaussian
noise (sigma = 2 on the 0-255 scale in the official code) so they are not pixel-identical to any
test image.
The official code leaves those originals in the test set, so the model is tested on images it
was trained on. adlkit removes them (``leaky=False``, the default); ``leaky=True`` reproduces
the paper's protocol for comparison.

Open-set supervised anomaly detection (DRA: Ding, Pang & Shen, CVPR 2022; AHL: Zhu, Ding, Tian &
Pang, CVPR 2024): a few labelled anomalies (M shots) are seen in training and the model is tested
on anomalies it may never have seen. :func:`open_set_split` makes the two settings of those papers,
*general* (shots from all anomaly types) and *hard* (shots from one type, test on the others).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .datasets import ImageDataset, relabel

__all__ = ["ContaminationReport", "FewShotReport", "OpenSetSplit", "ProtocolSplit", "anomaly_types", "contaminate",
           "few_shot", "n_contaminated", "open_set_split", "protocol_split"]


def n_contaminated(ratio: float, n_good: int) -> int:
    """n_c = floor(epsilon / (1 - epsilon) * N_good): the anomalies that make up ``ratio`` of the new set.

    Derived in notebook 00, §4 (contamination: anomalies hiding in the normal training set)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"contamination ratio must be in [0, 1) (e.g. 0.1 for 10%); got {ratio}")
    return int(math.floor(ratio / (1.0 - ratio) * n_good + 1e-9))


@dataclass
class ContaminationReport:
    ratio: float
    seed: int
    leaky: bool
    noise_std: float
    n_good: int
    n_contaminated: int
    test_before: int
    test_after: int
    moved: list[str] = field(default_factory=list)  # paths of the test anomalies now in training
    by_class: dict[str, int] = field(default_factory=dict)

    @property
    def actual_ratio(self) -> float:
        total = self.n_good + self.n_contaminated
        return self.n_contaminated / total if total else 0.0

    def summary(self) -> str:
        where = "kept in the test set too (leaky, as the official code)" if self.leaky else "removed from the test set"
        return (f"contamination {self.ratio:.0%}: {self.n_contaminated} test anomalies join {self.n_good} normal "
                f"training images (actual {self.actual_ratio:.1%}, noise sigma {self.noise_std}/255), {where}; "
                f"test set {self.test_before} -> {self.test_after} images.")


def contaminate(train: ImageDataset, test: ImageDataset, ratio: float, seed: int = 0, *, leaky: bool = False,
                noise_std: float = 2.0) -> tuple[ImageDataset, ImageDataset, ContaminationReport]:
    """Contaminate ``train`` with anomalies from ``test`` (ADL protocol). Returns (train, test, report).

    With several classes in the datasets, each class is contaminated at the same ratio from its own
    anomalies. Raises when a class has too few anomalies for the ratio asked.

    Derived in notebook 00, §4 (contamination: anomalies hiding in the normal training set).
    """
    n_c_total = 0
    rng = np.random.default_rng(seed)
    moved_idx: list[int] = []
    by_class: dict[str, int] = {}
    n_good_total = 0
    train_good_by_class = Counter(s.class_name for s in train.samples if s.label == 0 and s.truth == 0)
    for cls in sorted(train_good_by_class):
        n_good = train_good_by_class[cls]
        n_c = n_contaminated(ratio, n_good)
        pool = [i for i, s in enumerate(test.samples) if s.class_name == cls and s.truth == 1]
        if n_c > len(pool):
            raise ValueError(
                f"class {cls!r}: contamination {ratio:.0%} of {n_good} normal images needs {n_c} anomalies but the "
                f"test set has only {len(pool)}. Use a lower ratio."
            )
        chosen = sorted(rng.choice(pool, size=n_c, replace=False).tolist()) if n_c else []
        moved_idx += chosen
        by_class[cls] = n_c
        n_c_total += n_c
        n_good_total += n_good
    added = [
        relabel(test.samples[i], label=0, anomalous=1, noise_seed=int(rng.integers(2**31)), noise_std=noise_std)
        for i in moved_idx
    ]
    new_train = train.with_samples(train.samples + added, name=f"{train.name}+contaminated{ratio:g}")
    moved_set = set(moved_idx)
    keep = range(len(test)) if leaky else [i for i in range(len(test)) if i not in moved_set]
    new_test = test.subset(keep, name=test.name if leaky else f"{test.name}-without-contamination")
    report = ContaminationReport(ratio, seed, leaky, noise_std, n_good_total, n_c_total, len(test), len(new_test),
                                 [str(test.samples[i].path) for i in moved_idx], by_class)
    return new_train, new_test, report


@dataclass
class FewShotReport:
    n_per_class: int
    seed: int
    shots: list[str] = field(default_factory=list)
    by_class: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{len(self.shots)} labelled anomalies ({self.n_per_class} per class: {self.by_class}) "
                "taken out of the test set for training.")


def few_shot(test: ImageDataset, n_per_class: int, seed: int = 0) -> tuple[ImageDataset, ImageDataset, FewShotReport]:
    """Take ``n_per_class`` labelled anomalies per class out of ``test``. Returns (shots, test, report).

    Shots keep their masks (multi-cue ADL trains on them) and are never left in the test set.
    """
    if n_per_class < 0:
        raise ValueError(f"n_per_class must be >= 0; got {n_per_class}")
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    by_class = {}
    for cls in sorted({s.class_name for s in test.samples}):
        pool = [i for i, s in enumerate(test.samples) if s.class_name == cls and s.truth == 1 and s.label == 1]
        if n_per_class > len(pool):
            raise ValueError(f"class {cls!r} has {len(pool)} labelled anomalies in the test set; "
                             f"{n_per_class} shots asked.")
        picked = sorted(rng.choice(pool, size=n_per_class, replace=False).tolist()) if n_per_class else []
        chosen += picked
        by_class[cls] = len(picked)
    chosen_set = set(chosen)
    shots = test.subset(chosen, name=f"{test.name}-shots{n_per_class}")
    rest = test.subset([i for i in range(len(test)) if i not in chosen_set], name=f"{test.name}-without-shots")
    return shots, rest, FewShotReport(n_per_class, seed, [str(test.samples[i].path) for i in chosen], by_class)


@dataclass
class ProtocolSplit:
    """One run's data under ADL's protocol: the contaminated training set, the labelled anomalies
    (shots, multi-cue ADL), the test set that is scored, and the reports of both moves."""

    train: ImageDataset
    test: ImageDataset
    shots: ImageDataset
    report: ContaminationReport
    shot_report: FewShotReport

    @property
    def contaminated(self) -> ImageDataset:
        """The anomalies hidden in the training set (labelled normal)."""
        return self.train.subset([i for i, s in enumerate(self.train.samples) if s.truth == 1 and s.label == 0])


def protocol_split(train: ImageDataset, test: ImageDataset, ratio: float, seed: int = 0, *, leaky: bool = False,
                   n_shots: int = 0) -> ProtocolSplit:
    """Contaminate the training set (:func:`contaminate`), then take ``n_shots`` labelled anomalies per
    class out of what is left of the test set (:func:`few_shot`); both seeded by ``seed``. The one place
    ADL and multi-cue ADL get their data from."""
    c_train, c_test, report = contaminate(train, test, ratio, seed=seed, leaky=leaky)
    shots, c_test, shot_report = few_shot(c_test, n_shots, seed=seed)
    return ProtocolSplit(c_train, c_test, shots, report, shot_report)


# ----------------------------------------------------------------------------- open-set supervised AD (DRA, AHL)
OPEN_SET_SETTINGS = ("general", "hard")


def anomaly_types(test: ImageDataset) -> list[str]:
    """The sorted defect types (``Sample.defect``) of the anomalies in ``test``: the candidate seen classes."""
    return sorted({s.defect for s in test.samples if s.truth == 1})


@dataclass
class OpenSetSplit:
    """One run's data in the open-set supervised setting (DRA / AHL).

    ``train``: the normal training images, as given. ``shots``: the M labelled anomalies seen in
    training (label 1), taken out of the test set. ``test``: the normal test images plus the anomalies
    that are scored - every other anomaly (*general*) or only those of the unseen types (*hard*).
    ``seen_rest`` (*hard* only, else empty): the seen type's anomalies that are not shots. They are
    kept out of ``test`` (the hard setting scores unseen anomalies only) but are at hand to plot or
    to compute a "seen AUROC".
    """

    train: ImageDataset
    shots: ImageDataset
    test: ImageDataset
    seen_rest: ImageDataset
    setting: str
    n_shots: int
    seed: int
    seen_class: str | None = None

    def summary(self) -> str:
        n_good = sum(1 for s in self.test.samples if s.truth == 0)
        n_anom = len(self.test) - n_good
        scored = anomaly_types(self.test)
        if self.setting == "hard":
            head = (f"hard open-set split (seed {self.seed}): {self.n_shots} labelled {self.seen_class!r} anomalies "
                    "for training")
            rest = f"; {len(self.seen_rest)} other {self.seen_class!r} anomalies kept apart (seen_rest)"
        else:
            head = (f"general open-set split (seed {self.seed}): {self.n_shots} labelled anomalies of "
                    f"{anomaly_types(self.shots)} for training")
            rest = ""
        return (f"{head}; {len(self.train)} normal training images; test {n_good} normal + {n_anom} anomalous "
                f"images of {scored}{rest}.")


def open_set_split(train: ImageDataset, test: ImageDataset, setting: str = "general", shots: int = 10, seed: int = 0,
                   seen_class: str | None = None) -> OpenSetSplit:
    """Split ``test`` for open-set supervised anomaly detection. Returns an :class:`OpenSetSplit`.

    The protocol of DRA (Ding, Pang & Shen, CVPR 2022) that AHL (Zhu, Ding, Tian & Pang, CVPR 2024,
    §4.1) follows. The "type" of an anomaly is its ``Sample.defect`` (the MVTec sub-folder, e.g.
    ``crack``; for ELPV's ``protocol="open_set"`` the cell type, ``mono`` or ``poly``).

    * ``"general"``: ``shots`` anomalies drawn at random from all anomalies of all types pooled (so
      the seen types follow the test set's mix); the test set keeps the normal images and every
      other anomaly, seen types included.
    * ``"hard"``: ``shots`` anomalies drawn from the type ``seen_class`` only; the test set keeps the
      normal images and the anomalies of the *other* types only, so every scored anomaly is of a type
      never seen in training. The seen type's other anomalies go to ``seen_rest``.

    ``train`` is passed through as it is. The draw is seeded (``numpy.random.default_rng(seed)``) and
    samples keep their order, ``class_name`` and masks. With several classes in ``test`` the types of
    all classes are pooled by name (the papers split one category at a time).
    """
    if setting not in OPEN_SET_SETTINGS:
        raise ValueError(f"unknown open-set setting {setting!r}; use 'general' (shots from all anomaly types) or "
                         "'hard' (shots from one type, seen_class=...).")
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise ValueError(f"shots must be a whole number >= 1 (the papers use 10 or 1); got {shots!r}")
    if setting == "general" and seen_class is not None:
        raise ValueError(f"seen_class={seen_class!r} is only for the 'hard' setting; in 'general' the shots come "
                         "from all types. Drop seen_class, or use setting='hard'.")
    types = anomaly_types(test)
    if not types:
        raise ValueError(f"the test set {test.name!r} holds no anomalies: an open-set split needs labelled ones.")
    anomalies = [i for i, s in enumerate(test.samples) if s.truth == 1]
    if setting == "hard":
        if seen_class is None:
            raise ValueError(f"the 'hard' setting needs seen_class=..., the one anomaly type the shots come from; "
                             f"available types: {types}")
        if len(types) < 2:
            raise ValueError(f"the 'hard' setting needs at least 2 anomaly types (one seen, the others unseen) but "
                             f"the test set {test.name!r} has only {types}. Use setting='general'.")
        if seen_class not in types:
            raise ValueError(f"unknown seen class {seen_class!r}: the test set's anomaly types are {types}")
        pool = [i for i in anomalies if test.samples[i].defect == seen_class]
        what = f"anomalies of the seen type {seen_class!r}"
    else:
        pool = anomalies
        what = "anomalies in total"
    if shots > len(pool):
        raise ValueError(f"{shots} shots asked but the test set {test.name!r} has only {len(pool)} {what}. "
                         f"Ask for at most {len(pool)} shots.")
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(pool, size=shots, replace=False).tolist())
    if setting == "hard":
        rest = [i for i in pool if i not in chosen]
        keep = [i for i, s in enumerate(test.samples) if s.truth == 0 or s.defect != seen_class]
    else:
        rest = []
        keep = [i for i in range(len(test)) if i not in chosen]
    tag = f"{setting}{shots}" + (f"-{seen_class}" if setting == "hard" else "")
    return OpenSetSplit(
        train=train,
        shots=test.subset(sorted(chosen), name=f"{test.name}-shots-{tag}"),
        test=test.subset(keep, name=f"{test.name}-open-set-{tag}"),
        seen_rest=test.subset(rest, name=f"{test.name}-seen-rest-{tag}"),
        setting=setting, n_shots=shots, seed=seed, seen_class=seen_class,
    )
