# points: 2
# Hidden tests for `seed_summary` (notebook 09, mean ± std over seeds of per-seed class means). nbgrader removes this cell's hidden block from the release.
import numpy as np

from adlkit import report
from adlkit.grading import own_work

_forbid = [report.summarise, report.seed_table]


def _run(seed, category, value, metric="image_AUROC"):
    return {"seed": seed, "category": category, metric: value, "method": "knn"}


# metric "pixel_AUROC" (image_AUROC set to 0 as a decoy), seeds 5, 0, 2 shuffled, two classes each:
# per seed: seed 0 (0.7 + 0.9)/2 = 0.8, seed 2 (1.0 + 0.8)/2 = 0.9, seed 5 (0.6 + 0.8)/2 = 0.7
# mean 0.8; population std sqrt((0^2 + 0.1^2 + 0.1^2) / 3) = sqrt(0.02 / 3) = 0.0816497; 3 seeds
_runs = [{**_run(s, c, v, "pixel_AUROC"), "image_AUROC": 0.0}
         for s, c, v in [(5, "a", 0.6), (0, "b", 0.9), (2, "a", 1.0), (0, "a", 0.7), (5, "b", 0.8), (2, "b", 0.8)]]
_out = np.asarray(own_work(seed_summary, _runs, "pixel_AUROC", forbidden=_forbid), dtype=float)
assert _out.shape == (3,) and np.allclose(_out, [0.8, np.sqrt(0.02 / 3), 3]), \
    "seed_summary: wrong on three unordered seeds with another metric than image_AUROC"

# seeds with different numbers of runs: seed 0 (0.6 + 0.9 + 0.9)/3 = 0.8, seed 1 0.9 -> mean 0.85, std 0.05, 2 seeds
# (each seed counts once, not each run)
_runs = [_run(0, "a", 0.6), _run(0, "b", 0.9), _run(0, "c", 0.9), _run(1, "a", 0.9)]
_out = np.asarray(own_work(seed_summary, _runs, "image_AUROC", forbidden=_forbid), dtype=float)
assert np.allclose(_out, [0.85, 0.05, 2]), "seed_summary: wrong when the seeds have different numbers of runs"

# against adlkit's reference, computed here outside your function: 4 seeds x 3 classes of a metric "image_AUPR"
_rng = np.random.default_rng(1212)
_runs = [_run(s, c, float(_rng.uniform(0.5, 1.0)), "image_AUPR") for s in (3, 1, 4, 0) for c in ("x", "y", "z")]
_stat = report.summarise({"f": _runs}, report.Select("f", {}), "image_AUPR")
_out = np.asarray(own_work(seed_summary, _runs, "image_AUPR", forbidden=_forbid), dtype=float)
assert np.allclose(_out, [_stat.mean, _stat.std, _stat.n_seeds], rtol=1e-5, atol=1e-6), \
    "seed_summary: wrong on 4 seeds x 3 classes of image_AUPR"
