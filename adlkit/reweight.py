"""Closed-form per-minibatch instance weights (ADL, eqs. 7-11).

ADL: A. S. Das, G. Pang, M. Bhuyan. Adaptive Deviation Learning for Visual Anomaly Detection with
Data Contamination. arXiv:2411.09558, 2024 (WACV 2025).

A contaminated training set holds anomalies labelled "normal"; the model fits them badly, so their
loss is high. ADL weighs each sample of a minibatch by solving (eq. 7)

    min_w  sum_i w_i L_i + tau * D(w || u)    subject to  w_i >= 0,  sum_i w_i = 1,

with u the uniform weights: a low total loss, but not too far from uniform. The three divergences
give closed forms, all non-increasing in the loss (with lambda = alpha = 0.1 in the paper):

* KL(w || u)          (eq. 8)  w_i ∝ exp(-L_i / lambda)
* reverse KL(u || w)  (eq. 9)  w_i ∝ 1 / (L_i + lambda)
* alpha-divergence    (eq. 10) w_i ∝ [(1 - alpha) L_i + lambda]_+^{1 / (alpha - 1)}

Alpha -> 1 gives KL, alpha = 0 gives reverse KL. For KL, lambda *is* the strength tau. For the other
two, lambda collects the Lagrange multiplier of sum w = 1 together with tau; the tau for which the
closed form is the exact minimiser follows from normalisation (:func:`equivalent_strength`), and
:func:`solve_numerically` checks the closed forms against scipy on the Lagrangian problem.
Weights are computed on *detached* losses (they are not trained through). The authors' code
implements only the alpha form.

Eq. 7 is solved "over each minibatch" and eq. 11 constrains sum_j w_1j = sum_k w_2k = 1 over it: one
normalisation over the whole batch, normal-labelled images and pseudo-anomalies together (as the authors'
code does). That is :func:`batch_weights`' default. ``within_label=True`` (:func:`weights_within_labels`)
is adlkit's declared option: each label's samples are normalised among themselves.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["kl_weights", "reverse_kl_weights", "alpha_weights", "instance_weights", "weights_within_labels", "batch_weights",
           "alpha_divergence", "equivalent_strength", "solve_numerically"]


def _losses(losses) -> torch.Tensor:
    x = torch.as_tensor(losses).detach()
    if not torch.is_floating_point(x):
        x = x.float()
    if x.ndim != 1 or x.numel() == 0:
        raise ValueError(f"losses must be a non-empty 1-D tensor (one loss per sample); got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("losses contain NaN or inf: the training diverged before reweighting "
                         "(lower the learning rate, or check the inputs for NaN)")
    return x


def _log_weights(x: torch.Tensor, alpha: float, lam: float) -> torch.Tensor:
    """log of the unnormalised eq.-10 weights, computed stably; -inf where [.]_+ clips to 0."""
    if lam <= 0:
        raise ValueError(f"lambda must be > 0; got {lam}")
    if alpha == 1.0:  # KL, the alpha -> 1 limit
        return -x / lam
    # log[(1-alpha) L + lambda]^(1/(alpha-1)) = (log lambda + log1p((1-alpha) L / lambda)) / (alpha - 1);
    # log lambda is a constant and cancels in the normalisation.
    arg = (1 - alpha) * x / lam
    logw = torch.log1p(arg.clamp_min(-1.0)) / (alpha - 1)
    return torch.where(arg > -1.0, logw, torch.full_like(logw, -math.inf))


def alpha_weights(losses, alpha: float = 0.1, lam: float = 0.1) -> torch.Tensor:
    """Eq. 10: w_i ∝ [(1 - alpha) L_i + lambda]_+^{1/(alpha - 1)}, normalised to sum to 1.

    Stable for losses up to 1e4 and beyond (log-space + softmax). For alpha > 1 the bracket clips
    samples with L_i >= lambda / (alpha - 1) to weight 0; if it clips all of them, the weight goes to
    the lowest-loss sample(s), the limit of the formula as the last one is clipped.

    Derived in notebook 03, §2 (the per-minibatch problem and its closed forms).
    """
    x = _losses(losses)
    logw = _log_weights(x.double(), float(alpha), float(lam))
    if torch.isinf(logw).all():
        logw = torch.where(x == x.min(), 0.0, -math.inf).double()
    return torch.softmax(logw, dim=0).to(x.dtype)


def kl_weights(losses, lam: float = 0.1) -> torch.Tensor:
    """Eq. 8: w_i ∝ exp(-L_i / lambda) (a softmax of -L / lambda).

    Derived in notebook 03, §2 (the per-minibatch problem and its closed forms)."""
    return alpha_weights(losses, alpha=1.0, lam=lam)


def reverse_kl_weights(losses, lam: float = 0.1) -> torch.Tensor:
    """Eq. 9: w_i ∝ 1 / (L_i + lambda).

    Derived in notebook 03, §2 (the per-minibatch problem and its closed forms)."""
    return alpha_weights(losses, alpha=0.0, lam=lam)


def instance_weights(losses, method: str = "alpha", lam: float = 0.1, alpha: float = 0.1) -> torch.Tensor:
    """Dispatch by name: ``"kl"``, ``"reverse_kl"``, ``"alpha"`` or ``"uniform"`` (burn-in, or reweighting off).

    Derived in notebook 03, §3 (weight against loss)."""
    if method == "kl":
        return kl_weights(losses, lam)
    if method == "reverse_kl":
        return reverse_kl_weights(losses, lam)
    if method == "alpha":
        return alpha_weights(losses, alpha, lam)
    if method == "uniform":
        x = _losses(losses)
        return torch.full_like(x, 1.0 / x.numel())
    raise ValueError(f"unknown reweighting {method!r}; choose 'kl', 'reverse_kl', 'alpha' or 'uniform'")


def weights_within_labels(losses: torch.Tensor, labels: torch.Tensor, method: str = "alpha", lam: float = 0.1,
                          alpha: float = 0.1) -> torch.Tensor:
    """Weights summing to 1 over a batch, each label's samples weighted among themselves (an option).

    The samples of each label share that label's fraction of the batch. Contamination hides among
    the normal-labelled samples, and pseudo-anomalies (whose margin loss is often exactly 0) can
    otherwise take much of the weight from the normals (notebook 03 measures how much: under KL nearly all
    of it on some classes, under alpha less than their share on others). This split is adlkit's option, not the
    paper's (see notebook 03); eqs. 7 and 11 normalise over the whole batch (:func:`instance_weights`).
    """
    w = torch.zeros_like(losses.detach(), dtype=torch.float32)
    for label in torch.unique(labels):
        sel = labels == label
        w[sel] = instance_weights(losses[sel], method, lam, alpha).float() * sel.float().mean()
    return w.to(losses.dtype)


def batch_weights(losses: torch.Tensor, labels: torch.Tensor, method: str = "alpha", lam: float = 0.1,
                  alpha: float = 0.1, within_label: bool = False) -> torch.Tensor:
    """The weights a training step uses: one :func:`instance_weights` over the whole minibatch (eqs. 7 and
    11, the default), or with ``within_label=True`` adlkit's option :func:`weights_within_labels`.

    Derived in notebook 03, §5 (reweighting while training)."""
    if within_label:
        return weights_within_labels(losses, labels, method, lam, alpha)
    return instance_weights(losses, method, lam, alpha)


# ----------------------------------------------------------------------------- the problem behind the closed forms
def alpha_divergence(w: np.ndarray, alpha: float) -> float:
    """Amari's alpha-divergence D_alpha(w || u) from the uniform u (alpha = 1: KL(w||u), 0: KL(u||w))."""
    w = np.asarray(w, dtype=float)
    u = np.full_like(w, 1.0 / w.size)
    if alpha == 1.0:
        return float(np.sum(np.where(w > 0, w * np.log(np.maximum(w, 1e-300) / u), 0.0) - w + u))
    if alpha == 0.0:
        return float(np.sum(u * np.log(u / np.maximum(w, 1e-300)) - u + w))
    return float(np.sum(u ** (1 - alpha) * w**alpha - alpha * w + (alpha - 1) * u) / (alpha * (alpha - 1)))


def equivalent_strength(losses, alpha: float, lam: float) -> float:
    """The tau of eq. 7 whose exact minimiser is the closed form with this lambda.

    Stationarity of sum w L + tau D_alpha + nu (sum w - 1) gives
    w_i = (1/n) [((1 - alpha) L_i + (1 - alpha) nu + tau) / tau]^{1/(alpha-1)}, i.e. the closed form
    with lambda = (1 - alpha) nu + tau; sum w = 1 then fixes tau = [mean_i ((1-alpha) L_i + lambda)^{1/(alpha-1)}]^{alpha-1}.
    For KL (alpha = 1), tau = lambda.

    Derived in notebook 03, §4 (the closed forms solve eq. 7, numerically).
    """
    x = _losses(losses).double().numpy()
    if alpha == 1.0:
        return float(lam)
    base = (1 - alpha) * x + lam
    if np.any(base <= 0):
        raise ValueError("some weights are clipped to 0 ([.]_+): the problem's minimiser lies on the simplex boundary")
    return float(np.mean(base ** (1 / (alpha - 1))) ** (alpha - 1))


def solve_numerically(losses, alpha: float, tau: float) -> np.ndarray:
    """Solve eq. 7, min_w sum w_i L_i + tau D_alpha(w || u) on the simplex, with scipy's SLSQP.

    Derived in notebook 03, §4 (the closed forms solve eq. 7, numerically)."""
    from scipy.optimize import minimize

    x = _losses(losses).double().numpy()
    n = x.size

    def objective(w):
        return float(w @ x) + tau * alpha_divergence(w, alpha)

    res = minimize(objective, np.full(n, 1.0 / n), method="SLSQP", bounds=[(1e-12, 1.0)] * n,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
                   options={"ftol": 1e-14, "maxiter": 1000})
    if not res.success:
        raise RuntimeError(f"scipy could not solve eq. 7: {res.message}")
    return res.x / res.x.sum()
