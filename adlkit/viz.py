"""Plots shared by the notebooks: one theme, the papers' main figure kinds, and ``savefig``.

* :func:`score_distributions` - per class, the density of scores for normal vs anomalous (and
  contaminated) images: the figure every paper of this series leads with.
* :func:`robustness_curve` - a metric against the contamination ratio, one line per method.
* :func:`heatmap_overlay` - an anomaly map over its image, with the ground-truth contour.
* :func:`savefig` - writes ``figures/<name>.png`` only when ``ADLKIT_SAVE_FIGURES=1``.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from .config import figures_dir, save_figures

__all__ = [
    "PALETTE",
    "heatmap_overlay",
    "image_grid",
    "robustness_curve",
    "save_results",
    "savefig",
    "score_distributions",
    "set_theme",
]

PALETTE = {"normal": "#4C72B0", "anomalous": "#DD8452", "contaminated": "#C44E52"}


def set_theme() -> None:
    """The one adlkit look: seaborn 'whitegrid', colour-blind-safe palette, readable sizes."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "axes.titleweight": "bold",
                         "image.cmap": "viridis"})


def _np(x):
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def score_distributions(scores, labels, classes=None, contaminated=None, *, title: str | None = None,
                        bins: int = 30, col_wrap: int = 5, kde: bool = True, sharex: bool = False,
                        threshold: float | None = None):
    """Per-class score distributions of normal vs anomalous (and contaminated) images.

    ``labels``: 1 = anomalous; ``classes``: a class name per score (None: one panel);
    ``contaminated``: boolean per score marking training anomalies that were labelled normal.
    ``sharex``: one score axis (and bins) for every panel, so classes can be compared - what one
    threshold for all classes sees; ``threshold``: a vertical line at that score on every panel.
    Returns the matplotlib figure.
    """
    scores, labels = _np(scores).ravel(), _np(labels).ravel().astype(int)
    classes = np.array(["all"] * len(scores) if classes is None else list(classes))
    group = np.where(labels == 1, "anomalous", "normal").astype(object)
    if contaminated is not None:
        group[_np(contaminated).ravel().astype(bool)] = "contaminated"
    names = sorted(set(classes))
    n = len(names)
    ncol = min(n, col_wrap)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.8 * nrow), squeeze=False, sharex=sharex)
    for ax, name in zip(axes.ravel(), names):
        sel = classes == name
        edges = np.histogram_bin_edges(scores if sharex else scores[sel], bins=bins)  # shared bins: groups comparable
        for g in ("normal", "anomalous", "contaminated"):
            vals = scores[sel & (group == g)]
            if len(vals) == 0:
                continue
            sns.histplot(vals, bins=edges, stat="density", kde=kde and len(vals) > 2 and np.ptp(vals) > 0,
                         color=PALETTE[g], alpha=0.35, label=f"{g} ({len(vals)})", ax=ax, element="step")
        if threshold is not None:
            ax.axvline(threshold, color="black", ls="--", lw=1, label="threshold")
        ax.set_title(name)
        ax.set_xlabel("anomaly score")
        ax.legend(fontsize=8)
    for ax in axes.ravel()[n:]:
        ax.remove()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def robustness_curve(ratios, results: dict, *, metric: str = "image AUROC", ax=None, title: str | None = None):
    """``results``: method name -> values (one per ratio, or a list of runs per ratio for mean ± std)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2))
    x = 100 * np.asarray(ratios, dtype=float)
    for name, values in results.items():
        arr = [np.atleast_1d(np.asarray(v, dtype=float)) for v in values]
        mean = np.array([a.mean() for a in arr])
        ax.plot(x, mean, marker="o", label=name)
        if any(len(a) > 1 for a in arr):
            std = np.array([a.std() for a in arr])
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("training-set contamination (%)")
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    ax.legend()
    return ax.figure


def heatmap_overlay(image, amap, mask=None, *, ax=None, alpha: float = 0.5, title: str | None = None,
                    vmin=None, vmax=None, colorbar: str | None = None):
    """Show ``image`` ([3,H,W] or [H,W,3] in [0,1]) with ``amap`` ([H,W]) on top and the mask's contour;
    ``colorbar``: a colour bar with this label beside the axes (what the colours mean, on which scale)."""
    img = _np(image)
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = img.transpose(1, 2, 0)
    amap = _np(amap).squeeze()
    if amap.shape != img.shape[:2]:
        raise ValueError(f"anomaly map {amap.shape} and image {img.shape[:2]} differ in size; upsample the map first.")
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(np.clip(img, 0, 1).squeeze(), cmap="gray" if img.shape[-1] == 1 else None)
    shown = ax.imshow(amap, cmap="jet", alpha=alpha, vmin=vmin, vmax=vmax)
    if colorbar:
        bar = ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        bar.set_label(colorbar, fontsize=7)
        bar.ax.tick_params(labelsize=6)
    if mask is not None:
        m = _np(mask).squeeze()
        if m.any():
            ax.contour(m > 0.5, levels=[0.5], colors="white", linewidths=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax.figure


def gallery_figure(galleries: dict, *, size: float = 1.7, title: str | None = None):
    """One row per saved run (``{row label: adlkit.gallery.load(...)}``), one column per kept test image: the
    image with the run's map on the run's own colour scale (its ``vmin``/``vmax``: a faint map stays faint) and
    the defect's contour in white; each title gives the defect type and the score's rank among the test set's
    scores (1 = the highest), so a reader sees where the method put the image, not only where it looked."""
    if not galleries:
        raise ValueError("no galleries to show: load them with adlkit.gallery.load(path)")
    ncol = max(len(g["scores"]) for g in galleries.values())
    fig, axes = plt.subplots(len(galleries), ncol, figsize=(size * ncol + 0.8, size * len(galleries) + 0.5),
                             squeeze=False)
    for r, (label, g) in enumerate(galleries.items()):
        meta = g["meta"]
        for c in range(ncol):
            ax = axes[r, c]
            if c >= len(g["scores"]):
                ax.set_axis_off()
                continue
            img = g["images"][c].astype(np.float32) / 255
            img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
            what = g["defects"][c] if g["anomalous"][c] else "normal"
            heatmap_overlay(img, g["maps"][c], g["masks"][c], ax=ax, vmin=meta["vmin"], vmax=meta["vmax"],
                                    title=f"{what}\nrank {g['rank'][c] + 1}/{meta['n_test']}")
            ax.title.set_fontsize(7)
        axes[r, 0].text(-0.08, 0.5, label, transform=axes[r, 0].transAxes, rotation=90, ha="right", va="center",
                        fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def image_grid(images, titles=None, ncol: int = 8, size: float = 1.6, cmap=None):
    """A grid of images ([N,3,H,W] / [N,H,W] tensors or arrays, or a list of them)."""
    imgs = [_np(im) for im in images]
    n = len(imgs)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(size * ncol, size * nrow + (0.25 * nrow if titles else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i >= n:
            continue
        im = imgs[i]
        if im.ndim == 3 and im.shape[0] in (1, 3):
            im = im.transpose(1, 2, 0)
        ax.imshow(np.clip(im.squeeze(), 0, 1), cmap=cmap or ("gray" if im.squeeze().ndim == 2 else None),
                  vmin=0, vmax=1)
        if titles:
            ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def _unique(path: Path, overwrite: bool) -> Path:
    if not path.exists():
        return path
    if overwrite:
        print(f"adlkit: replacing {path} (ADLKIT_SAVE_FIGURES=1 regenerates figures; overwrite=False keeps it)")
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return path.with_name(f"{path.stem}.{stamp}{path.suffix}")


def savefig(fig, name: str, *, overwrite: bool = True) -> Path | None:
    """Write ``figures/<name>.png`` when ``ADLKIT_SAVE_FIGURES=1``; otherwise do nothing (return None).

    Figures are regenerated artefacts of the notebooks (``make figures``), so by default the
    file is replaced; pass ``overwrite=False`` to keep an existing one and write a timestamped copy.
    """
    if not save_figures():
        return None
    out = figures_dir() / (name if name.endswith(".png") else f"{name}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    out = _unique(out, overwrite)
    fig.savefig(out, bbox_inches="tight")
    return out


def save_results(name: str, results: dict, *, device: str, mode: str, dataset: str, wall_time_s: float,
                 overwrite: bool = True, **info) -> Path | None:
    """Write ``figures/results/<name>.json`` (the numbers behind a figure) when saving figures.

    Records the device, mode, dataset, wall time, software versions, adlkit's version and git commit next
    to the numbers, plus any ``info`` (backbone, weights, image size, schedule, texture source, seeds...).
    """
    if not save_figures():
        return None
    import torch

    from . import __version__
    from .config import git_commit
    from .training import write_json

    out = figures_dir() / "results" / f"{name}.json"
    out = _unique(out, overwrite)
    payload = {"device": device, "mode": mode, "dataset": dataset, "wall_time_s": round(wall_time_s, 2),
               "adlkit": __version__, "commit": git_commit(), "torch": torch.__version__,
               "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"), **info, "results": results}
    return write_json(out, payload)
