"""Seeing what a model found, without a notebook: score a folder of your own images with a saved model
(``python -m adlkit predict``), one overlay PNG per image (the image, then its anomaly map over it with the
ground-truth defect outlined), ``scores.csv``, and HTML galleries sorted by score with the false alarms and the
misses flagged at the F1-max threshold (``predict --html``; ``report --html`` does the same for the maps every
``run ... --save-maps`` kept beside the committed results).

Colours: one scale for a whole page (the 1st and 99.9th percentile of every map value shown), so a faint map
stays faint; the defect's outline is green.
"""
from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch
from PIL import Image

from . import metrics
from .data import ImageDataset, Sample
from .data.datasets import IMAGE_SUFFIXES

_SUFFIXES = {x.lower() for x in IMAGE_SUFFIXES}
__all__ = ["image_folder", "overlay", "flag", "predict_folder", "write_gallery", "report_html"]

OUTLINE = (0, 255, 0)


# ----------------------------------------------------------------------------- images in
def image_folder(path: str | Path, image_size: int, masks: str | Path | None = None) -> tuple[ImageDataset, bool]:
    """Every image under ``path`` (recursively, in name order) at ``image_size``, and whether they are labelled.

    A folder in MVTec AD's test layout (``good/`` beside one folder per defect type) is labelled: ``good`` images
    normal, the others anomalous with their folder as defect type, and masks read from ``masks`` (or a
    ``ground_truth/`` folder beside ``path``) as ``<defect>/<name>_mask.png``. Any other folder is unlabelled.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"--images {path}: no such folder. Point it at a folder of images (png, jpg, bmp, tif)")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _SUFFIXES)
    if not files:
        raise FileNotFoundError(f"--images {path}: no image files (png, jpg, bmp, tif) under it")
    labelled = (path / "good").is_dir()
    loose = [f.name for f in files if labelled and len(f.relative_to(path).parts) == 1]
    if loose:
        raise ValueError(f"--images {path} is in MVTec's test layout (it has good/), but {loose[:3]} sit beside the "
                         "folders, with no label: move them into good/ or a defect type's folder")
    gt = Path(masks).expanduser() if masks else path.parent / "ground_truth"
    if masks and not gt.is_dir():
        raise FileNotFoundError(f"--masks {gt}: no such folder (expected <defect>/<name>_mask.png inside)")
    samples = []
    for f in files:
        defect = f.relative_to(path).parts[0] if labelled else "good"
        label = int(labelled and defect != "good")
        mask = gt / defect / f"{f.stem}_mask.png" if label else None
        samples.append(Sample(f, label, path.name, defect, mask if mask is not None and mask.is_file() else None))
    for s in samples:  # before any scoring: a mask must have its image's size
        if s.mask_path is not None:
            with Image.open(s.path) as im, Image.open(s.mask_path) as m:
                if im.size != m.size:
                    raise ValueError(f"mask {s.mask_path} is {m.size[0]}x{m.size[1]} but its image {s.path} is "
                                     f"{im.size[0]}x{im.size[1]}: re-export the mask at the image's size")
    return ImageDataset(samples, image_size, path.name), labelled


# ----------------------------------------------------------------------------- pictures out
def _outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a binary mask [H, W]: in the mask, with a 4-neighbour outside it."""
    m = np.pad(mask.astype(bool), 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask.astype(bool) & ~inner


def overlay(image: np.ndarray, amap: np.ndarray | None, vmin: float, vmax: float,
            mask: np.ndarray | None = None, alpha: float = 0.5) -> np.ndarray:
    """One picture [S, 2S, 3] uint8: the image, then its map (inferno, ``vmin``..``vmax``) over it; a defect
    ``mask`` [S, S] is outlined in green on both. ``image`` [S, S, 3] or [S, S, 1] uint8; no map: the image twice."""
    from matplotlib import colormaps

    image = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    right = image.astype(np.float32)
    if amap is not None:
        scaled = np.clip((np.asarray(amap, dtype=np.float32) - vmin) / max(vmax - vmin, 1e-12), 0, 1)
        heat = colormaps["inferno"](scaled)[..., :3] * 255
        right = (1 - alpha) * right + alpha * heat
    pair = [image.copy(), right.round().astype(np.uint8)]
    if mask is not None and mask.any():
        edge = _outline(mask)
        for p in pair:
            p[edge] = OUTLINE
    return np.concatenate(pair, axis=1)


def flag(score: float, anomalous: int | None, threshold: float | None) -> str:
    """At the threshold (an image is called anomalous at or above it): TP, FP (a false alarm), FN (a miss) or TN;
    "" when the image is unlabelled or there is no threshold."""
    if anomalous is None or threshold is None:
        return ""
    called = score >= threshold
    return ("TP" if called else "FN") if anomalous else ("FP" if called else "TN")


# ----------------------------------------------------------------------------- HTML
_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px}
.card{border:3px solid #ddd;border-radius:6px;padding:6px;background:#fafafa}
.card img{width:100%;image-rendering:pixelated}.FP{border-color:#e67e22}.FN{border-color:#c0392b}
.TP{border-color:#27ae60}.badge{font-weight:bold;padding:0 4px;border-radius:3px;color:#fff}
.badge.FP{background:#e67e22}.badge.FN{background:#c0392b}.badge.TP{background:#27ae60}.badge.TN{background:#7f8c8d}
.meta{font-size:.85em;color:#555}table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #eee}"""


def write_gallery(path: str | Path, title: str, about: list[str], cards: list[dict]) -> Path:
    """An HTML page: ``title``, the lines ``about`` (already HTML), and one card per image sorted by score (highest
    first). A card: ``src`` (the overlay, relative to the page), ``name``, ``score``, ``rank`` (0 = highest of its
    test set), ``defect``, ``flag`` (TP/FP/FN/TN or "")."""
    path = Path(path)
    cards = sorted(cards, key=lambda c: (-c["score"], c["name"]))
    counts = {f: sum(c["flag"] == f for c in cards) for f in ("TP", "FP", "FN", "TN")}
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             *[f"<p class='meta'>{line}</p>" for line in about]]
    if any(counts.values()):
        parts.append("<p>" + " · ".join(f"<span class='badge {f}'>{f}</span> {n}" for f, n in counts.items()) + "</p>")
    parts.append("<div class='grid'>")
    for c in cards:
        badge = f"<span class='badge {c['flag']}'>{c['flag']}</span> " if c["flag"] else ""
        parts.append(f"<div class='card {c['flag']}' data-score='{c['score']:.6g}'><img src='{html.escape(quote(c['src']))}' "
                     f"alt='{html.escape(c['name'])}'><div>{badge}<b>{c['score']:.4g}</b> · rank {c['rank'] + 1}"
                     f"</div><div class='meta'>{html.escape(c['name'])} · {html.escape(c['defect'])}</div></div>")
    parts.append("</div></body></html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path


def _fresh_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to write into it, or choose another "
                              "--out")
    out.mkdir(parents=True, exist_ok=True)


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, optimize=True)


# ----------------------------------------------------------------------------- predict on a folder
def _scores_and_maps(module, model, dataset: ImageDataset, batch_size: int):
    """The images (uint8 [N, 3, S, S], decoded once: the overlays draw them), their scores [N] and maps [N, S, S]
    (None for a method without maps), batch by batch."""
    images, scores, maps = [], [], []
    for start in range(0, len(dataset), batch_size):
        batch = torch.stack([dataset.load_image(s) for s in dataset.samples[start:start + batch_size]])
        out = module.predict(model, batch)
        images.append(batch)
        scores.append(torch.as_tensor(out["scores"]).float().cpu().numpy().ravel())
        if out.get("maps") is not None:
            maps.append(torch.as_tensor(out["maps"]).float().cpu().numpy())
    return torch.cat(images), np.concatenate(scores), (np.concatenate(maps) if maps else None)


def predict_folder(model_path: str | Path, images: str | Path, out: str | Path, masks: str | Path | None = None,
                   html_page: bool = False, threshold: float | None = None, device=None, overwrite: bool = False,
                   batch_size: int = 16) -> dict:
    """Score every image under ``images`` with the model saved at ``model_path`` (any method's ``save``): writes
    ``out/scores.csv`` (file, score, rank, label, defect, flag, overlay), ``out/overlays/*.png`` and, with
    ``html_page``, ``out/index.html``. ``threshold``: the score at or above which an image is called anomalous;
    by default the F1-max threshold of the folder's labels when it has both kinds (MVTec test layout), else none.
    Returns ``{"scores", "threshold", "metrics", "csv", "html"}``."""
    from . import config, gallery, methods

    out = Path(out)
    module, model = methods.load_any(model_path, device if device is not None else config.device())
    dataset, labelled = image_folder(images, model.config.image_size, masks)
    _fresh_folder(out, overwrite)
    images_u8, scores, maps = _scores_and_maps(module, model, dataset, batch_size)
    truths = dataset.truths if labelled else None
    found = metrics.image_metrics(scores, truths) if labelled else {}
    given = threshold is not None
    if threshold is None and found:
        threshold = found["image_F1max_threshold"]
    vmin, vmax = gallery.colour_scale(maps) if maps is not None else (0.0, 1.0)
    rank = gallery.ranks(scores)
    rows, cards = [], []
    for i, s in enumerate(dataset.samples):
        rel = Path(s.path).relative_to(Path(images).expanduser())
        png = Path("overlays") / rel.with_name(rel.name + ".png")  # a.jpg and a.png stay apart
        image = images_u8[i].permute(1, 2, 0).numpy()
        mask = dataset.load_mask(s)[0].numpy() if s.mask_path else None
        _save_png(overlay(image, maps[i] if maps is not None else None, vmin, vmax, mask), out / png)
        f = flag(float(scores[i]), int(s.truth) if labelled else None, threshold)
        rows.append({"file": str(rel), "score": f"{scores[i]:.6g}", "rank": int(rank[i]) + 1,
                     "label": ("anomalous" if s.truth else "normal") if labelled else "", "defect":
                     s.defect if labelled else "", "flag": f, "overlay": str(png)})
        cards.append({"src": str(png), "name": str(rel), "score": float(scores[i]), "rank": int(rank[i]),
                      "defect": s.defect if labelled else "", "flag": f})
    with open(out / "scores.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["rank"]))
    page = None
    if html_page:
        about = [f"model <code>{html.escape(str(model_path))}</code> ({html.escape(module.__name__.split('.')[-1])}, "
                 f"{model.config.image_size} px) on <code>{html.escape(str(images))}</code>: {len(scores)} images",
                 _threshold_line(threshold, found, given), f"map colour scale {vmin:.4g} … {vmax:.4g}"]
        where = "/".join(Path(images).expanduser().resolve().parts[-2:])  # e.g. tile/test
        page = write_gallery(out / "index.html", f"{where}: anomaly scores", about, cards)
    return {"scores": scores, "threshold": threshold, "metrics": found, "csv": out / "scores.csv", "html": page}


def _threshold_line(threshold: float | None, found: dict, given: bool) -> str:
    if threshold is None:
        return "no threshold: the images are unlabelled (give --threshold to flag them)"
    auroc = f"image AUROC {found['image_AUROC']:.3f}; " if found else ""
    if given:
        return f"{auroc}flags at the threshold {threshold:.4g} (given): an image at or above it is called anomalous"
    return (f"{auroc}flags at the F1-max threshold {threshold:.4g} (F1 {found['image_F1max']:.3f}): an image at or "
            "above it is called anomalous")


# ----------------------------------------------------------------------------- the committed runs' maps
def _matching_row(rows: list[dict], meta: dict) -> dict | None:
    """The result row a gallery was saved with: the one whose run id it records, else (a gallery from before run
    ids) the one final row with every field it records equal (CADA's: the pooled row of the aligned score); None
    when no single row matches."""
    from .report import _final
    from .runs import RunRecord

    if meta.get("run"):
        found = [r for r in rows if RunRecord.from_row(r, stamped=False).run_id() == meta["run"]]
    else:
        where = {k: meta[k] for k in ("method", "ablation", "setting", "dataset", "category", "contamination", "shots",
                                      "leaky", "training", "backbone", "image_size", "seed") if k in meta}
        if where.get("method") == "cada":  # the gallery shows the aligned score on the mixed test set
            where.update(method="cada:cada", category="pooled")
        found = [r for r in rows if _final(r) and all(r.get(k) == v for k, v in where.items())]
    return found[0] if len(found) == 1 else None


def report_html(results: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """An HTML gallery per saved run and class for every ``*_maps/`` folder in ``results`` (``run ...
    --save-maps``), and ``out/index.html`` linking them. Each page: the kept test images sorted by score, flagged at
    the run's F1-max threshold where its result row records one (``image_F1max_threshold``)."""
    from . import gallery
    from .training import read_results

    results, out = Path(results), Path(out)
    folders = sorted(p for p in results.glob("*_maps") if p.is_dir())
    if not folders:
        raise FileNotFoundError(f"no saved maps in {results} (folders RESULTS_maps/ from `run ... --save-maps`)")
    _fresh_folder(out, overwrite)
    links = []
    for folder in folders:
        rows = read_results(folder.with_name(folder.name[: -len("_maps")] + ".json"))
        for npz in sorted(folder.glob("*.npz")):
            if not npz.name.endswith(".part.npz"):
                links += _gallery_pages(gallery.load(npz), rows, out, f"{folder.name}/{npz.stem}")
    items = "".join(f"<li><a href='{html.escape(quote(href))}'>{html.escape(text)}</a></li>" for href, text in links)
    index = out / "index.html"
    index.write_text(f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Saved maps</title><style>"
                     f"{_STYLE}</style></head><body><h1>Saved maps of the committed runs</h1><p class='meta'>"
                     f"{len(links)} pages from {html.escape(str(results))}</p><ul>{items}</ul></body></html>\n")
    return index


def _gallery_pages(g: dict, rows: list[dict], out: Path, name: str) -> list[tuple[str, str]]:
    from . import gallery

    meta = g["meta"]
    row = {} if "image_F1max_threshold" in meta else (_matching_row(rows, meta) or {})
    threshold = meta.get("image_F1max_threshold", row.get("image_F1max_threshold"))
    if threshold is None and row.get("test_scores") and 0 < sum(row["test_labels"]) < len(row["test_labels"]):
        threshold = metrics.f1_max_threshold(row["test_scores"], row["test_labels"])[1]  # a row from before F1max
    links = []
    for cls in sorted(set(g["classes"].tolist())):
        part = gallery.subset(g, cls)
        page = out / name / (f"{cls}.html")
        cards = []
        for i in range(len(part["scores"])):
            png = f"{cls}_{i:02d}.png"
            _save_png(overlay(part["images"][i], part["maps"][i], meta["vmin"], meta["vmax"], part["masks"][i]),
                      page.parent / png)
            cards.append({"src": png, "name": str(part["names"][i]), "score": float(part["scores"][i]),
                          "rank": int(part["rank"][i]), "defect": str(part["defects"][i]),
                          "flag": flag(float(part["scores"][i]), int(part["anomalous"][i]), threshold)})
        row_name = meta.get("ablation") if meta.get("ablation") not in (None, "kNN", "custom") else ""
        title = f"{meta.get('method')} {row_name} · {cls} · seed {meta.get('seed')}".replace("  ", " ")
        about = [html.escape(json.dumps({k: v for k, v in meta.items() if k not in ("vmin", "vmax")})),
                 (f"flags at the run's F1-max threshold {threshold:.4g}" if threshold is not None else
                  "no flags: no F1-max threshold found for this run (its gallery and result row predate it, or no "
                  "single row of the result file matches the gallery)"),
                 f"{len(cards)} of the run's {meta.get('n_test')} test images, ranks among all of them"]
        write_gallery(page, title, about, cards)
        links.append((str(page.relative_to(out)), title))
    return links


