"""Checkers for the notebooks' exercises.

Each ``check_*`` runs a student's function on random and edge cases against adlkit's reference
with a tolerance, prints a short report and returns ``None`` when every case passes. On the
first failing case it raises ``AssertionError`` whose message is the report: what passed, the
failing case's inputs, the expected and the obtained value. A ``NotImplementedError`` (an
exercise not yet done) is let through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import metrics

__all__ = ["check_adl_step", "check_alpha_weights", "check_auroc", "check_cada_regression_loss",
           "check_ckaad_discriminator_loss", "check_cue_fusion", "check_deviation_loss", "check_perlin_interpolation",
           "check_top_k_mean", "check_unified_auroc", "run_cases"]


def _fmt(value: Any, limit: int = 10) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v, 4)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)) and value and hasattr(value[0], "detach"):  # e.g. per-level maps
        return "[" + ", ".join(_fmt(v, 4) for v in value) + "]"
    if not hasattr(value, "detach") and not isinstance(value, (np.ndarray, list, tuple, int, float, np.number)):
        return repr(value)[:200]
    arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
    if arr.ndim == 0:
        return f"{arr.item():.6g}" if np.issubdtype(arr.dtype, np.number) else str(arr.item())
    flat = arr.ravel()
    body = np.array2string(flat[:limit], precision=4, separator=", ")
    more = f" ... ({flat.size} values, shape {arr.shape})" if flat.size > limit else ""
    return body + more


def run_cases(name: str, student_fn: Callable, reference_fn: Callable, cases: list[tuple[str, dict]],
              rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Compare ``student_fn(**inputs)`` with ``reference_fn(**inputs)`` on every case.

    Prints ``name: N/N cases passed`` on success; raises ``AssertionError`` with a report on the
    first failure (wrong value, wrong shape, or an exception other than NotImplementedError).
    """
    passed: list[str] = []
    for label, inputs in cases:
        expected = reference_fn(**inputs)
        try:
            got = student_fn(**inputs)
        except NotImplementedError:
            raise
        except Exception as err:  # report the student's crash as a failed case
            failure = f"raised {type(err).__name__}: {err}"
        else:
            exp_arr, got_arr = np.asarray(_to_np(expected), dtype=float), np.asarray(_to_np(got), dtype=float)
            if exp_arr.shape != got_arr.shape:
                failure = f"shape {got_arr.shape}, expected {exp_arr.shape}"
            elif not np.allclose(got_arr, exp_arr, rtol=rtol, atol=atol, equal_nan=False):
                failure = f"got {_fmt(got_arr)}, expected {_fmt(exp_arr)}"
            else:
                passed.append(label)
                continue
        lines = [f"{name}: failed on case '{label}' ({len(passed)}/{len(cases)} cases passed before it)"]
        lines += [f"  passed: {p}" for p in passed]
        lines.append(f"  FAILED: {label}")
        lines += [f"    {k} = {_fmt(v)}" for k, v in inputs.items()]
        lines.append(f"    -> {failure}")
        report = "\n".join(lines)
        print(report)
        raise AssertionError(report)
    print(f"{name}: all {len(cases)} cases passed ({', '.join(passed)})")


def _to_np(x):
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy()
    return x


# ----------------------------------------------------------------------------- notebook 00
def check_auroc(student_fn: Callable) -> None:
    """Notebook 00: ``auroc(scores, labels)`` - the probability that an anomaly outscores a normal image.

    Reference: :func:`adlkit.metrics.image_auroc` (scikit-learn). Ties must count one half.
    """
    rng = np.random.default_rng(1234)
    cases = [
        ("perfect separation", dict(scores=np.array([0.1, 0.2, 0.8, 0.9]), labels=np.array([0, 0, 1, 1]))),
        ("perfectly wrong", dict(scores=np.array([0.9, 0.8, 0.2, 0.1]), labels=np.array([0, 0, 1, 1]))),
        ("all scores tied", dict(scores=np.ones(6), labels=np.array([0, 1, 0, 1, 0, 0]))),
        ("some ties across classes", dict(scores=np.array([1.0, 2, 2, 3, 3, 3, 4]), labels=np.array([0, 0, 1, 0, 1, 1, 1]))),
        ("unsorted, unbalanced", dict(scores=np.array([0.3, 0.9, 0.1, 0.5, 0.7]), labels=np.array([1, 0, 0, 0, 0]))),
    ]
    for k in range(3):
        n = int(rng.integers(20, 200))
        labels = (rng.random(n) < rng.uniform(0.1, 0.5)).astype(int)
        labels[:2] = [0, 1]
        scores = rng.normal(size=n) + labels * rng.uniform(0, 2)
        if k == 2:
            scores = np.round(scores, 1)  # many ties
        cases.append((f"random #{k + 1} (n={n})", dict(scores=scores, labels=labels)))
    run_cases("check_auroc", student_fn, metrics.image_auroc, cases)


# ----------------------------------------------------------------------------- notebook 01
def check_perlin_interpolation(student_fn: Callable) -> None:
    """Notebook 01: ``interpolate(n00, n10, n01, n11, ty, tx)`` - fade, then two lerps along y and one along x.

    Reference: :func:`adlkit.synth.perlin.interpolate_corners`.
    """
    import torch

    from .synth.perlin import interpolate_corners

    g = torch.Generator().manual_seed(0)
    corners = {f"n{a}{b}": torch.rand(5, 7, generator=g) * 2 - 1 for a in (0, 1) for b in (0, 1)}
    cases = [
        ("at the corner (0, 0)", {**corners, "ty": torch.zeros(5, 7), "tx": torch.zeros(5, 7)}),
        ("mid-cell (0.5, 0.5)", {**corners, "ty": torch.full((5, 7), 0.5), "tx": torch.full((5, 7), 0.5)}),
        ("close to the far corner", {**corners, "ty": torch.full((5, 7), 0.99), "tx": torch.full((5, 7), 0.99)}),
        ("y and x differ (checks which axis is which)",
         {**corners, "ty": torch.full((5, 7), 0.2), "tx": torch.full((5, 7), 0.7)}),
        ("random positions", {**corners, "ty": torch.rand(5, 7, generator=g), "tx": torch.rand(5, 7, generator=g)}),
    ]
    run_cases("check_perlin_interpolation", student_fn, interpolate_corners, cases, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- notebook 02
def check_deviation_loss(student_fn: Callable) -> None:
    """Notebook 02: ``deviation_loss(z, y, margin)`` = (1 - y)|z| + y max(0, margin - z), per sample (eq. 4)."""
    import torch

    from .losses import deviation_loss

    g = torch.Generator().manual_seed(0)
    z = torch.randn(40, generator=g) * 4
    cases = [
        ("normal samples (y = 0): |z|", {"z": torch.tensor([-3.0, -0.5, 0.0, 2.0]), "y": torch.zeros(4), "margin": 5.0}),
        ("anomalies (y = 1) below, at and above the margin",
         {"z": torch.tensor([-1.0, 4.0, 5.0, 8.0]), "y": torch.ones(4), "margin": 5.0}),
        ("the authors' margin 10", {"z": torch.tensor([3.0, 12.0]), "y": torch.ones(2), "margin": 10.0}),
        ("random mix", {"z": z, "y": (torch.rand(40, generator=g) > 0.5).float(), "margin": 5.0}),
    ]
    run_cases("check_deviation_loss", student_fn, deviation_loss, cases)


def check_top_k_mean(student_fn: Callable) -> None:
    """Notebook 02: ``top_k_mean(patch_scores, ratio)`` - mean of the k = max(1, int(ratio N)) largest patches (eq. 2)."""
    import torch

    from .losses import top_k_mean

    g = torch.Generator().manual_seed(1)
    cases = [
        ("one map, k = 2", {"patch_scores": torch.tensor([[[[1.0, 9.0], [3.0, 7.0]]]]), "ratio": 0.5}),
        ("ties", {"patch_scores": torch.tensor([[5.0, 5.0, 5.0, 1.0, 0.0]]), "ratio": 0.4}),
        ("k never below 1", {"patch_scores": torch.tensor([[0.3, 0.1, 0.2]]), "ratio": 0.1}),
        ("a batch of [B, 1, h, w] maps", {"patch_scores": torch.rand(4, 1, 8, 8, generator=g), "ratio": 0.1}),
    ]
    run_cases("check_top_k_mean", student_fn, top_k_mean, cases)


# ----------------------------------------------------------------------------- notebook 03
def check_alpha_weights(student_fn: Callable) -> None:
    """Notebook 03: ``alpha_weights(losses, alpha, lam)`` ∝ [(1 - alpha) L + lam]_+^{1/(alpha-1)}, summing to 1 (eq. 10)."""
    import torch

    from .reweight import alpha_weights

    g = torch.Generator().manual_seed(2)
    cases = [
        ("paper setting alpha = lambda = 0.1", {"losses": torch.tensor([0.05, 0.2, 1.0, 3.0]), "alpha": 0.1, "lam": 0.1}),
        ("alpha = 0 (reverse KL)", {"losses": torch.tensor([0.0, 0.5, 2.0]), "alpha": 0.0, "lam": 0.1}),
        ("equal losses give uniform weights", {"losses": torch.full((5,), 0.7), "alpha": 0.5, "lam": 0.2}),
        ("a batch of 48 losses", {"losses": torch.rand(48, generator=g) * 3, "alpha": 0.3, "lam": 0.1}),
    ]
    run_cases("check_alpha_weights", student_fn, alpha_weights, cases, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- notebook 04
def check_adl_step(student_fn: Callable) -> None:
    """Notebook 04: ``adl_loss(out, labels, masks, mu_r, sd_r, target, config, after_burn_in)`` - the total
    loss of one step of Algorithm 1 on given inputs, for every ablation row, before and after burn-in, with
    the labels and with k-means labels as the BCE target. Reference: :func:`adlkit.methods.adl.adl_step`.
    """
    import dataclasses

    import torch

    from .losses import reference_stats
    from .methods.adl import ABLATIONS, ADLConfig, adl_step, kmeans_labels

    def reference(out, labels, masks, mu_r, sd_r, target, config, after_burn_in):
        return adl_step(out, labels, masks, mu_r, sd_r, target, config, after_burn_in)["total"]

    g = torch.Generator().manual_seed(3)
    mu_r, sd_r = reference_stats(5000, generator=torch.Generator().manual_seed(7))
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    masks = torch.zeros(8, 1, 16, 16)
    masks[4:, :, 4:9, 3:12] = 1
    cases = []
    for k, name in enumerate(ABLATIONS):
        out = {"score": torch.rand(8, generator=g) * 6, "logit": torch.randn(8, generator=g) * 2,
               "seg": torch.randn(8, 2, 16, 16, generator=g)}
        config = dataclasses.replace(ADLConfig().ablation(name), reweight=("alpha", "kl", "reverse_kl")[k % 3])
        kmeans = kmeans_labels(out["score"])
        for after in (True, False):
            target = (labels.float() if k % 2 == 0 else kmeans) if config.use_bce else None
            cases.append((f"{name}, {config.reweight} weights, {'after' if after else 'during'} burn-in, "
                          f"BCE target {'labels' if k % 2 == 0 else 'k-means'}",
                          {"out": out, "labels": labels, "masks": masks, "mu_r": mu_r, "sd_r": sd_r, "target": target,
                           "config": config, "after_burn_in": after}))
    run_cases("check_adl_step", student_fn, reference, cases, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- notebook 05
def check_cue_fusion(student_fn: Callable) -> None:
    """Notebook 05: ``normalize_and_fuse(raw, normalizers, weights)`` - phi(x; c, D) per cue, then the
    weighted geometric mean. Reference: :func:`adlkit.methods.multicue.normalize_cue` and ``fuse``."""
    import torch

    from .methods.multicue import fuse, normalize_cue

    def reference(raw, normalizers, weights):
        return fuse({k: normalize_cue(raw[k], *normalizers[k]) for k in raw}, weights)

    g = torch.Generator().manual_seed(5)
    names = ("deviation", "uncertainty", "segmentation")
    raw = {k: torch.rand(12, generator=g) * s for k, s in zip(names, (8.0, 0.5, 1.0))}
    norms = {"deviation": (1.5, 6.0), "uncertainty": (0.1, 0.5), "segmentation": (0.2, 0.9)}
    cases = [
        ("paper weights (0.55, 0.10, 0.35)", {"raw": raw, "normalizers": norms, "weights": (0.55, 0.10, 0.35)}),
        ("equal weights: the geometric mean", {"raw": raw, "normalizers": norms, "weights": (1.0, 1.0, 1.0)}),
        ("unnormalised weights (2, 0, 2)", {"raw": raw, "normalizers": norms, "weights": (2.0, 0.0, 2.0)}),
        ("values beyond D and below 0 are clipped",
         {"raw": {k: torch.tensor([-1.0, 0.0, 100.0]) + 0.5 for k in names}, "normalizers": norms,
          "weights": (0.55, 0.10, 0.35)}),
    ]
    run_cases("check_cue_fusion", student_fn, reference, cases, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- notebook 06
def check_cada_regression_loss(student_fn: Callable) -> None:
    """Notebook 06: ``regression_loss(pred, target, alpha)`` = SL1(u_hat, u) + SL1(gamma_hat, gamma), each
    averaged over the batch (CADA eqs. 3-4). Reference: :func:`adlkit.methods.cada.regression_loss`."""
    import torch

    from .methods.cada import regression_loss

    g = torch.Generator().manual_seed(6)
    cases = [
        ("every error below alpha (the quadratic branch)",
         {"pred": torch.tensor([[0.50, 1.00], [0.20, 0.90]]), "target": torch.tensor([[0.52, 1.05], [0.19, 0.92]]),
          "alpha": 0.1}),
        ("every error above alpha (the linear branch)",
         {"pred": torch.tensor([[0.0, 2.0], [1.0, 0.0]]), "target": torch.tensor([[0.5, 1.0], [0.2, 0.9]]), "alpha": 0.1}),
        ("errors exactly at alpha, where the branches meet",
         {"pred": torch.tensor([[0.1, 0.6]]), "target": torch.tensor([[0.0, 0.5]]), "alpha": 0.1}),
        ("another alpha", {"pred": torch.rand(8, 2, generator=g), "target": torch.rand(8, 2, generator=g), "alpha": 0.3}),
        ("a random batch of 16", {"pred": torch.randn(16, 2, generator=g), "target": torch.randn(16, 2, generator=g),
                                  "alpha": 0.1}),
    ]
    run_cases("check_cada_regression_loss", student_fn, regression_loss, cases, rtol=1e-4, atol=1e-6)


def check_unified_auroc(student_fn: Callable) -> None:
    """Notebook 06: ``unified_auroc(scores, labels, classes)`` -> (pooled AUROC, mean of the per-class AUROCs).

    Pooled ranks every image of every class together (one threshold for all); per class ranks each
    class on its own. Reference: :func:`adlkit.metrics.image_auroc`.
    """

    def reference(scores, labels, classes):
        names = sorted(set(classes.tolist()))
        per = [metrics.image_auroc(scores[classes == c], labels[classes == c]) for c in names]
        return np.array([metrics.image_auroc(scores, labels), np.mean(per)])

    rng = np.random.default_rng(7)
    hand = dict(scores=np.array([.1, .2, .3, .4, 1.1, 1.2, 1.3, 1.4]), labels=np.array([0, 0, 1, 1, 0, 0, 1, 1]),
                classes=np.array(["a"] * 4 + ["b"] * 4))
    cases = [("two classes on shifted scales (pooled 0.75, per class 1)", hand),
             ("the same, classes interleaved", {k: v[[0, 4, 1, 5, 2, 6, 3, 7]] for k, v in hand.items()})]
    n = 90
    classes = np.array(["tile", "capsule", "fabric"])[rng.integers(0, 3, n)]
    labels = (rng.random(n) < 0.4).astype(int)
    labels[:6] = [0, 1, 0, 1, 0, 1]
    classes[:6] = ["tile", "tile", "capsule", "capsule", "fabric", "fabric"]
    shift = np.select([classes == "tile", classes == "capsule"], [0.0, 2.0], 5.0)
    cases.append(("three classes, random scores", dict(scores=rng.normal(size=n) + labels + shift, labels=labels,
                                                       classes=classes)))
    run_cases("check_unified_auroc", student_fn, reference, cases)


# ----------------------------------------------------------------------------- notebook 07
def check_ckaad_discriminator_loss(student_fn: Callable) -> None:
    """Notebook 07: ``patch_d_loss(s_normal, s_anomalous, s_recon, gamma, margin)`` - CKAAD's eq. 8 for the
    patch discriminator (eqs. 11-12): each argument is a list of per-level score maps [B, h_l, w_l]; the
    energy E(s, y) = (1 - y)|s| + y max(0, m - |s|) is averaged over images and positions and summed over
    levels, then E(normal, 0) + (1 - gamma) E(anomalous, 1) + gamma E(recon, 1).
    Reference: :func:`adlkit.methods.ckaad.discriminator_energy`."""
    import torch

    from .methods.ckaad import CKAADConfig, discriminator_energy

    def reference(s_normal, s_anomalous, s_recon, gamma, margin):
        config = CKAADConfig(gamma=gamma, margin=margin)
        return (discriminator_energy(s_normal, 0, config) + (1 - gamma) * discriminator_energy(s_anomalous, 1, config)
                + gamma * discriminator_energy(s_recon, 1, config))

    g = torch.Generator().manual_seed(7)

    def levels(fill=None, scale=1.0, sign=1.0):
        shapes = [(3, 8, 8), (3, 4, 4), (3, 2, 2)]
        if fill is not None:
            return [torch.full(s, float(fill)) for s in shapes]
        return [sign * scale * torch.randn(s, generator=g).abs() if sign else scale * torch.randn(s, generator=g)
                for s in shapes]

    cases = [
        ("every score 0 (normal costs 0, anomalies cost m)", dict(s_normal=levels(0), s_anomalous=levels(0),
                                                                s_recon=levels(0), gamma=0.5, margin=5.0)),
        ("|s| beyond the margin (anomalies cost 0)", dict(s_normal=levels(0.5), s_anomalous=levels(7.0),
                                                          s_recon=levels(-6.0), gamma=0.5, margin=5.0)),
        ("negative scores (the energy uses |s|)", dict(s_normal=levels(scale=2.0, sign=-1.0),
                                                       s_anomalous=levels(scale=2.0, sign=-1.0),
                                                       s_recon=levels(scale=2.0, sign=-1.0), gamma=0.5, margin=5.0)),
        ("random scores, gamma 0.2, margin 3", dict(s_normal=levels(scale=3.0, sign=0), s_anomalous=levels(scale=3.0, sign=0),
                                                   s_recon=levels(scale=3.0, sign=0), gamma=0.2, margin=3.0)),
    ]
    run_cases("check_ckaad_discriminator_loss", student_fn, reference, cases, rtol=1e-5, atol=1e-6)


def check_meta_gradient(student_fn: Callable) -> None:
    """Notebook 08: ``maml_gradient(theta, support_loss, query_loss, beta)`` - the gradient with respect to
    theta of query_loss(theta - beta * grad support_loss(theta)) (AHL's eqs. 1-2, one inner step), where
    the losses are functions of a parameter vector [C] returning a scalar. It must keep the inner gradient
    in the graph: on a loss with curvature the answer is (I - beta H) grad query_loss(theta').
    Reference: :func:`adlkit.methods.ahl.adapt` with ``create_graph=True``."""
    import torch

    from .methods.ahl import adapt

    def reference(theta, support_loss, query_loss, beta):
        theta = theta.detach().clone().requires_grad_(True)
        adapted = adapt(theta[None], lambda th, _: support_loss(th[0]).reshape(1), [None], beta, create_graph=True)
        return torch.autograd.grad(query_loss(adapted[0]), theta)[0]

    g = torch.Generator().manual_seed(11)
    A = torch.randn(5, 5, generator=g)
    H = A @ A.T + torch.eye(5)
    b, q = torch.randn(5, generator=g), torch.randn(5, generator=g)
    f = torch.randn(12, 4, 4, generator=g)  # 12 images x 4 patches x 4 channels (theta: 4 weights + a bias)
    y = torch.tensor([0.0] * 6 + [1.0] * 6)

    def quadratic(theta):
        return 0.5 * theta @ H @ theta - b @ theta

    def query(theta):
        return ((theta - q) ** 2).sum()

    def dev_loss(theta):  # DevNet's head and deviation loss (no reference draws: mu = 0, sigma = 1)
        s = (f @ theta[:4] + theta[4]).abs().topk(1, dim=1).values.mean(1)
        return ((1 - y) * s.abs() + y * (5 - s).clamp_min(0)).sum()

    def theta(seed):
        return torch.randn(5, generator=torch.Generator().manual_seed(seed))

    cases = [
        ("quadratic support, quadratic query (the Hessian matters)",
         dict(theta=theta(0), support_loss=quadratic, query_loss=query, beta=0.05)),
        ("beta = 0 (no adaptation: the query gradient at theta)",
         dict(theta=theta(1), support_loss=quadratic, query_loss=query, beta=0.0)),
        ("DevNet's head on both sets (piecewise linear: no Hessian term)",
         dict(theta=theta(2), support_loss=dev_loss, query_loss=dev_loss, beta=0.01)),
    ]
    run_cases("check_meta_gradient", student_fn, reference, cases, rtol=1e-4, atol=1e-5)


def check_importance_weights(student_fn: Callable) -> None:
    """Notebook 08: ``importance_weights(predicted, y, c, keep, margin)`` -> w [T], AHL's eqs. 6-7:
    r_i = mean over the samples j with keep[j, i] of c[j, i] (clip(predicted[j, i] / margin, 0, 1) - y_j)^2,
    w = softmax(-r). Reference: :func:`adlkit.methods.ahl.importance_weights`."""
    import torch

    from .methods.ahl import importance_weights

    def reference(predicted, y, c, keep, margin):
        return importance_weights(predicted, y, c, keep, margin)[0]

    g = torch.Generator().manual_seed(5)
    y = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    rand = torch.rand(6, 4, generator=g) * 8
    ones = torch.ones(6, 4)
    keep_all = torch.ones(6, 4, dtype=torch.bool)
    keep_some = torch.rand(6, 4, generator=g) > 0.3
    keep_some[0] = True  # every task keeps a sample
    c = torch.where(torch.rand(6, 4, generator=g) > 0.5, 1.0, 0.5)
    perfect = torch.stack([torch.tensor([0.0, 0, 0, 5, 6, 9])] * 4, 1)
    cases = [
        ("every model perfect (r = 0: uniform w)", dict(predicted=perfect, y=y, c=ones, keep=keep_all, margin=5.0)),
        ("random predictions, all samples, c = 1", dict(predicted=rand, y=y, c=ones, keep=keep_all, margin=5.0)),
        ("scores past the margin are clipped", dict(predicted=rand * 3, y=y, c=ones, keep=keep_all, margin=5.0)),
        ("c weights and samples left out of D'_i", dict(predicted=rand, y=y, c=c, keep=keep_some, margin=5.0)),
    ]
    run_cases("check_importance_weights", student_fn, reference, cases)


# ----------------------------------------------------------------------------- notebook 09
def check_seed_summary(student_fn: Callable) -> None:
    """Notebook 09: ``seed_summary(runs, metric)`` -> [mean, std, n_seeds]: per seed, the mean of ``metric``
    over that seed's runs (its classes); then the mean and the (population) std of those per-seed values.
    Reference: :func:`adlkit.report.summarise`."""
    from .report import Select, summarise

    def reference(runs, metric):
        s = summarise({"f": runs}, Select("f", {}), metric)
        return np.array([s.mean, s.std, s.n_seeds])

    def run(seed, category, value):
        return {"seed": seed, "category": category, "image_AUROC": value}

    rng = np.random.default_rng(9)
    hand = [run(0, "tile", 0.9), run(0, "capsule", 0.8), run(1, "tile", 0.94), run(1, "capsule", 0.84)]
    cases = [
        ("two seeds x two classes (0.85 and 0.89 -> 0.87 ± 0.02)", dict(runs=hand, metric="image_AUROC")),
        ("one seed", dict(runs=hand[:2], metric="image_AUROC")),
        ("runs in any order", dict(runs=hand[::-1], metric="image_AUROC")),
        ("three seeds x five classes", dict(runs=[run(s, c, float(rng.uniform(0.6, 1.0))) for s in (0, 1, 2)
                                                 for c in ("a", "b", "c", "d", "e")], metric="image_AUROC")),
    ]
    run_cases("check_seed_summary", student_fn, reference, cases)
