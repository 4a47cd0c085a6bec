"""Per-exercise material for checking the hidden tests in ``assignments/hidden/<grade_id>.py``.

``CASES[grade_id]`` holds:

* ``notebook``: the notebook whose solution cell (the code cell with ``### BEGIN SOLUTION`` defining
  ``def <grade_id>(``) is the reference answer;
* ``setup``: what that cell needs from the notebook's earlier cells, so that ``exec(setup)`` then
  ``exec(<solution cell>)`` defines a working reference function;
* ``wrong``: a plausible, subtly wrong student answer (the comment says why it is wrong): the hidden tests
  must fail it with an ``AssertionError``;
* ``cheat``: an answer that only calls adlkit's reference: the hidden tests must fail it with
  :class:`adlkit.grading.ReferenceCallError`.

``wrong`` and ``cheat`` run after ``setup`` in the same namespace, in place of the solution cell.
"""

from __future__ import annotations

CASES: dict[str, dict] = {
    "auroc": {
        "notebook": "00_setup_and_data.ipynb",
        "setup": "import numpy as np\n",
        "wrong": '''
def auroc(scores, labels):
    # Wrong: ties between an anomaly and a normal image count 0 instead of one half.
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float((pos[:, None] > neg[None, :]).mean())
''',
        "cheat": '''
from adlkit.metrics import image_auroc as _image_auroc


def auroc(scores, labels):
    return _image_auroc(scores, labels)
''',
    },
    "interpolate": {
        "notebook": "01_perlin_synthesis.ipynb",
        "setup": "import math\n\nimport torch\n",
        "wrong": '''
def interpolate(n00, n10, n01, n11, ty, tx):
    # Wrong: forgets the sqrt(2) that scales 2-D Perlin noise from +-sqrt(1/2) to +-1.
    fy = 6 * ty**5 - 15 * ty**4 + 10 * ty**3
    fx = 6 * tx**5 - 15 * tx**4 + 10 * tx**3
    return torch.lerp(torch.lerp(n00, n10, fy), torch.lerp(n01, n11, fy), fx)
''',
        "cheat": '''
from adlkit.synth.perlin import interpolate_corners


def interpolate(n00, n10, n01, n11, ty, tx):
    return interpolate_corners(n00, n10, n01, n11, ty, tx)
''',
    },
    "deviation_loss": {
        "notebook": "02_deviation_losses.ipynb",
        "setup": "import torch\n",
        "wrong": '''
def deviation_loss(z, y, margin=5.0):
    # Wrong: the hinge is on the wrong side, max(0, z - margin): it punishes anomalies scored far above the
    # margin and lets those below it (the ones that should be pushed up) cost nothing.
    y = y.float()
    return (1 - y) * z.abs() + y * torch.clamp(z - margin, min=0)
''',
        "cheat": '''
from adlkit.losses import deviation_loss as _d


def deviation_loss(z, y, margin=5.0):
    return _d(z, y, margin)
''',
    },
    "top_k_mean": {
        "notebook": "02_deviation_losses.ipynb",
        "setup": "import torch\n",
        "wrong": '''
def top_k_mean(patch_scores, ratio=0.1):
    # Wrong: rounds ratio * N to the nearest integer instead of down (eq. 2: k = max(1, floor(ratio N))), so
    # e.g. N = 10, ratio 0.18 averages 2 patches instead of 1. (It passes the visible checker's cases.)
    flat = patch_scores.flatten(1)
    k = max(1, round(ratio * flat.shape[1]))
    return flat.topk(k, dim=1).values.mean(dim=1)
''',
        "cheat": '''
from adlkit import losses as _losses


def top_k_mean(patch_scores, ratio=0.1):
    return _losses.top_k_mean(patch_scores, ratio)
''',
    },
    "alpha_weights": {
        "notebook": "03_sample_reweighting.ipynb",
        "setup": "import torch\n",
        "wrong": '''
def alpha_weights(losses, alpha=0.1, lam=0.1):
    """w_i ∝ [(1 - alpha) L_i + lam]_+ ^ (1 / (alpha - 1)), normalised to sum to 1 (alpha != 1)."""
    losses = torch.as_tensor(losses, dtype=torch.float64).detach()
    # Wrong: the formula taken literally, not in log space. For large losses with alpha near 1 every power
    # underflows to 0 and the weights are 0 / 0 = NaN. (It passes the visible checker's cases.)
    w = ((1 - alpha) * losses + lam) ** (1 / (alpha - 1))
    return (w / w.sum()).float()
''',
        "cheat": '''
from adlkit.reweight import alpha_weights as _alpha_weights


def alpha_weights(losses, alpha=0.1, lam=0.1):
    return _alpha_weights(losses, alpha, lam)
''',
    },
    "adl_loss": {
        "notebook": "04_adl_contamination.ipynb",
        "setup": "import torch\n",
        "wrong": '''
import torch.nn.functional as F

from adlkit import losses, reweight


def adl_loss(out, labels, masks, mu_r, sd_r, target, config, after_burn_in):
    """Total loss of one step of Algorithm 1."""
    y = labels.float()
    z = (out["score"] - mu_r) / sd_r
    p = torch.sigmoid(out["logit"])
    # Wrong: ignores config.hard_burn_in (the authors'-code switch that uses the hard l_dev during burn-in):
    # l_soft in every epoch. (It passes the visible checker, whose configs all keep hard_burn_in=False.)
    soft = config.use_soft and config.use_bce
    l_dev = losses.soft_deviation_loss(z, p, config.margin) if soft else losses.deviation_loss(z, y, config.margin)
    method = config.reweight if (config.use_reweight and after_burn_in) else "uniform"

    def weights(l):
        return reweight.batch_weights(l, labels, method, config.lam, config.alpha, config.within_label)

    total = (weights(l_dev) * l_dev).sum()
    if config.use_bce:
        l_bce = F.binary_cross_entropy_with_logits(out["logit"], target, reduction="none")
        total = total + (weights(l_bce) * l_bce).sum()
    if config.use_seg:
        total = total + losses.focal_loss(out["seg"], masks, gamma=config.focal_gamma, reduction="mean")
    return total
''',
        "cheat": '''
from adlkit.methods.adl import adl_step


def adl_loss(out, labels, masks, mu_r, sd_r, target, config, after_burn_in):
    return adl_step(out, labels, masks, mu_r, sd_r, target, config, after_burn_in)["total"]
''',
    },
    "normalize_and_fuse": {
        "notebook": "05_multicue_localization.ipynb",
        # the solution cell ends by running the function on notebook 05's results R: a small stand-in with its keys
        "setup": '''import numpy as np
import torch

R = {"phi_inputs": {"deviation": torch.tensor([0.5, 3.0]), "uncertainty": torch.tensor([0.1, 0.4]),
                    "segmentation": torch.tensor([0.2, 0.8])},
     "normalizers": {"deviation": (1.5, 6.0), "uncertainty": (0.1, 0.5), "segmentation": (0.2, 0.9)}}
''',
        "wrong": '''
import math


def normalize_and_fuse(raw, normalizers, weights=(0.55, 0.10, 0.35)):
    """phi(x; c, D) for every cue, then prod_k phi_k ** (w_k / sum(w))."""
    w = torch.tensor(weights, dtype=torch.float32)
    w = w / w.sum()
    logs = []
    for name, x in raw.items():
        c, D = normalizers[name]
        phi = torch.log1p(torch.as_tensor(x, dtype=torch.float32).clamp(0, D) / c) / math.log1p(D / c)
        # Wrong: no 1e-6 floor before the log (the notebook asks for it): a cue at 0 gives log 0 = -inf, so the
        # fused score is 0 (or NaN when that cue's weight is 0). (It passes the visible checker's cases.)
        logs.append(torch.log(phi))
    return torch.exp((w[:, None] * torch.stack(logs)).sum(0))
''',
        "cheat": '''
from adlkit.methods.multicue import fuse, normalize_cue


def normalize_and_fuse(raw, normalizers, weights=(0.55, 0.10, 0.35)):
    return fuse({k: normalize_cue(raw[k], *normalizers[k]) for k in raw}, weights)
''',
    },
    "unified_auroc": {
        "notebook": "06_cada_alignment.ipynb",
        "setup": "import numpy as np\n\nfrom adlkit import metrics\n",
        "wrong": '''
def unified_auroc(scores, labels, classes):
    # Wrong: weighs each class's AUROC by its number of images; the per-class mean counts every class once.
    names = sorted(set(classes.tolist()))
    per_class = [metrics.image_auroc(scores[classes == c], labels[classes == c]) for c in names]
    sizes = [int((classes == c).sum()) for c in names]
    return metrics.image_auroc(scores, labels), float(np.average(per_class, weights=sizes))
''',
        "cheat": '''
import torch

from adlkit.methods import cada


def unified_auroc(scores, labels, classes):
    n = len(scores)
    result = {"labels": np.asarray(labels), "classes": np.asarray(classes), "params": {"v": torch.zeros(n, 2)},
              "scores": {"v": torch.as_tensor(np.asarray(scores, dtype=float))}, "maps": None, "eps": 1e-3,
              "clamped": {"v": torch.zeros(n)}, "classifier_accuracy": 1.0}
    rows = {r["category"]: r["image_AUROC"] for r in cada.unified_report(result, variants=("v",), pixel=False)}
    return rows["pooled"], rows["mean"]
''',
    },
    "regression_loss": {
        "notebook": "06_cada_alignment.ipynb",
        "setup": "import torch\n",
        "wrong": '''
def regression_loss(pred, target, alpha=0.1):
    # Wrong: one mean over all 2B errors, i.e. half of SL1(u) + SL1(gamma) (eqs. 3-4 add the two batch means).
    d = (pred - target).abs()
    return torch.where(d < alpha, d ** 2 / (2 * alpha), d - alpha / 2).mean()
''',
        "cheat": '''
from adlkit.methods.cada import regression_loss as _regression_loss


def regression_loss(pred, target, alpha=0.1):
    return _regression_loss(pred, target, alpha)
''',
    },
    "patch_d_loss": {
        "notebook": "07_ckaad_energy.ipynb",
        # notebook 07's first cell imports adlkit's energy; the solution uses it per position (allowed)
        "setup": "import torch\n\nfrom adlkit.losses import energy\n",
        "wrong": '''
def patch_d_loss(s_normal, s_anomalous, s_recon, gamma=0.5, margin=5.0):
    # Wrong: averages the per-level energies instead of summing them over the levels (eq. 12).
    def level_energy(scores, y):
        return sum(energy(s, y, margin).mean() for s in scores) / len(scores)

    return level_energy(s_normal, 0.0) + (1 - gamma) * level_energy(s_anomalous, 1.0) + gamma * level_energy(s_recon, 1.0)
''',
        "cheat": '''
from adlkit.methods.ckaad import CKAADConfig, discriminator_energy


def patch_d_loss(s_normal, s_anomalous, s_recon, gamma=0.5, margin=5.0):
    config = CKAADConfig(gamma=gamma, margin=margin)
    return (discriminator_energy(s_normal, 0, config) + (1 - gamma) * discriminator_energy(s_anomalous, 1, config)
            + gamma * discriminator_energy(s_recon, 1, config))
''',
    },
    "maml_gradient": {
        "notebook": "08_ahl_heterogeneity.ipynb",
        "setup": "import torch\n",
        "wrong": '''
def maml_gradient(theta, support_loss, query_loss, beta):
    # Wrong: no create_graph=True, so the inner gradient is a constant and the answer is first-order MAML,
    # grad query_loss(theta'), missing the (I - beta H) factor.
    theta = theta.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(support_loss(theta), theta)
    return torch.autograd.grad(query_loss(theta - beta * grad), theta)[0]
''',
        "cheat": '''
from adlkit.methods.ahl import adapt


def maml_gradient(theta, support_loss, query_loss, beta):
    theta = theta.detach().clone().requires_grad_(True)
    adapted = adapt(theta[None], lambda th, _: support_loss(th[0]).reshape(1), [None], beta, create_graph=True)
    return torch.autograd.grad(query_loss(adapted[0]), theta)[0]
''',
    },
    "importance_weights": {
        "notebook": "08_ahl_heterogeneity.ipynb",
        "setup": "import torch\n",
        "wrong": '''
def importance_weights(predicted, y, c, keep, margin):
    """Eqs. 6-7. predicted, c, keep: [n_query, n_tasks]; y: [n_query] (1 = anomaly); returns w: [n_tasks]."""
    # Wrong: clips the scaled score above at 1 but not below at 0, so a negative score is punished for
    # a normal image. (It passes the visible checker, whose scores are all non-negative.)
    err = c * ((predicted / margin).clamp(max=1) - y[:, None]) ** 2
    keep = keep.float()
    r = (err * keep).sum(0) / keep.sum(0).clamp_min(1)
    return torch.softmax(-r, dim=0)
''',
        "cheat": '''
from adlkit.methods import ahl


def importance_weights(predicted, y, c, keep, margin):
    return ahl.importance_weights(predicted, y, c, keep, margin)[0]
''',
    },
    "seed_summary": {
        "notebook": "09_reproduction_report.ipynb",
        "setup": "import numpy as np\n",
        "wrong": '''
def seed_summary(runs, metric):
    # Wrong: reads r["image_AUROC"] whatever `metric` names. (It passes the visible checker, which asks
    # for image_AUROC only.)
    seeds = sorted({r["seed"] for r in runs})
    per_seed = np.array([np.mean([r["image_AUROC"] for r in runs if r["seed"] == s]) for s in seeds])
    return np.array([per_seed.mean(), per_seed.std(), len(per_seed)])
''',
        "cheat": '''
from adlkit.report import Select, summarise


def seed_summary(runs, metric):
    s = summarise({"f": runs}, Select("f", {}), metric)
    return np.array([s.mean, s.std, s.n_seeds])
''',
    },
}
