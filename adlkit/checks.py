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

__all__ = ["check_auroc", "run_cases"]


def _fmt(value: Any, limit: int = 10) -> str:
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
