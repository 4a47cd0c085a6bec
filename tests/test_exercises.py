import dataclasses
import os
from pathlib import Path

import nbformat
import numpy as np
import pytest

from adlkit.checks import check_auroc

ROOT = Path(__file__).resolve().parents[1]
NB00 = ROOT / "notebooks" / "00_setup_and_data.ipynb"
RELEASE00 = ROOT / "exercises" / "00_setup_and_data.ipynb"  # nbgrader's release (adlkit.assignments)


def _prefix_through_checker(nb):
    """The notebook's cells up to and including the first checker call."""
    end = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "check_auroc(" in c.source)
    nb.cells = nb.cells[: end + 1]
    return nb, end


def _execute(nb, tmp_path):
    from nbclient import NotebookClient

    from adlkit.notebooks import current_env_kernel_manager

    os.environ.setdefault("ADLKIT_QUICK", "1")
    NotebookClient(nb, km=current_env_kernel_manager(), timeout=600,
                   resources={"metadata": {"path": str(tmp_path)}}).execute(cleanup_kc=True)  # shut the kernel down


def test_student_version_fails_at_the_exercise_and_the_reference_answer_passes(tmp_path):
    from nbclient.exceptions import CellExecutionError

    student, end = _prefix_through_checker(nbformat.read(RELEASE00, as_version=4))
    exercise_cell = next(i for i, c in enumerate(student.cells) if "raise NotImplementedError()" in c.source)
    assert "# Hint:" in student.cells[exercise_cell].source  # the hint stays above nbgrader's stub
    with pytest.raises(CellExecutionError) as err:
        _execute(student, tmp_path)
    assert "NotImplementedError" in str(err.value)
    ran = [i for i, c in enumerate(student.cells) if c.cell_type == "code" and c.get("execution_count")]
    assert max(ran) == exercise_cell  # everything before it ran; it is where execution stopped
    errors = [o for o in student.cells[exercise_cell].outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "NotImplementedError"

    # the student fills in the reference answer: the checker passes
    reference, _ = _prefix_through_checker(nbformat.read(NB00, as_version=4))
    student.cells[exercise_cell].source = reference.cells[exercise_cell].source
    for c in student.cells:
        c.outputs, c.execution_count = [], None
    _execute(student, tmp_path)
    checker_out = "".join(o.get("text", "") for o in student.cells[end].outputs)
    assert "check_auroc: all" in checker_out and "cases passed" in checker_out


def test_checker_accepts_a_correct_answer(capsys):
    from sklearn.metrics import roc_auc_score

    check_auroc(lambda scores, labels: roc_auc_score(labels, scores))
    assert "all" in capsys.readouterr().out


@pytest.mark.parametrize("wrong,why", [
    (lambda scores, labels: float(np.mean(scores[labels == 1][:, None] > scores[labels == 0][None, :])),
     "ties not counted as one half"),
    (lambda scores, labels: float(np.mean(scores[labels == 0][:, None] > scores[labels == 1][None, :])
                                  + 0.5 * np.mean(scores[labels == 0][:, None] == scores[labels == 1][None, :])),
     "classes swapped (sign error)"),
    (lambda scores, labels: float(((scores[labels == 1][:, None] > scores[labels == 0][None, :]).sum()
                                   + 0.5 * (scores[labels == 1][:, None] == scores[labels == 0][None, :]).sum())
                                  / len(scores) ** 2),
     "normalised by n^2 instead of n_pos * n_neg"),
])
def test_checker_catches_subtly_wrong_answers(wrong, why, capsys):
    with pytest.raises(AssertionError) as err:
        check_auroc(wrong)
    report = str(err.value)
    assert "FAILED" in report and "expected" in report and "scores =" in report, why


def test_checker_reports_a_crash_and_lets_not_implemented_through():
    def crashes(scores, labels):
        raise IndexError("boom")

    with pytest.raises(AssertionError, match="raised IndexError: boom"):
        check_auroc(crashes)

    def todo(scores, labels):
        raise NotImplementedError("Exercise: ...")

    with pytest.raises(NotImplementedError):
        check_auroc(todo)


def test_perlin_interpolation_checker_catches_wrong_answers():
    import math

    import torch

    from adlkit.checks import check_perlin_interpolation
    from adlkit.synth import fade

    def right(n00, n10, n01, n11, ty, tx):
        return math.sqrt(2) * torch.lerp(torch.lerp(n00, n10, fade(ty)), torch.lerp(n01, n11, fade(ty)), fade(tx))

    check_perlin_interpolation(right)
    wrong = {
        "linear instead of the fade": lambda n00, n10, n01, n11, ty, tx: math.sqrt(2) * torch.lerp(
            torch.lerp(n00, n10, ty), torch.lerp(n01, n11, ty), tx),
        "axes swapped": lambda n00, n10, n01, n11, ty, tx: right(n00, n10, n01, n11, tx, ty),
        "missing sqrt(2)": lambda *a: right(*a) / math.sqrt(2),
    }
    for fn in wrong.values():  # the keys say what is wrong with each
        with pytest.raises(AssertionError, match="FAILED"):
            check_perlin_interpolation(fn)


@pytest.mark.parametrize("checker,wrong", [
    ("check_deviation_loss", lambda z, y, margin: (1 - y) * z + y * torch_relu(margin - z)),  # |z| missing
    ("check_deviation_loss", lambda z, y, margin: (1 - y) * z.abs() + y * torch_relu(5.0 - z)),  # margin ignored
    ("check_top_k_mean", lambda patch_scores, ratio: patch_scores.flatten(1).topk(
        max(1, round(ratio * patch_scores[0].numel()) + 1), 1).values.mean(1)),  # k off by one
    ("check_top_k_mean", lambda patch_scores, ratio: patch_scores.flatten(1).max(1).values),  # max, not top-k mean
    ("check_alpha_weights", lambda losses, alpha, lam: ((1 - alpha) * losses + lam) ** (1 / (alpha - 1))),  # unnormalised
    ("check_alpha_weights", lambda losses, alpha, lam: (lambda w: w / w.sum())(
        ((1 - alpha) * losses + lam) ** (1 / (1 - alpha)))),  # sign of the exponent
])
def test_loss_and_weight_checkers_catch_wrong_answers(checker, wrong):
    import adlkit.checks as checks

    with pytest.raises(AssertionError, match="FAILED"):
        getattr(checks, checker)(wrong)


def torch_relu(x):
    import torch

    return torch.relu(x)


def test_adl_step_checker_accepts_the_reference(capsys):
    from adlkit.checks import check_adl_step
    from adlkit.methods.adl import adl_step

    # run_cases calls the student's function with keyword arguments (out=..., labels=..., ...)
    check_adl_step(lambda **inputs: adl_step(**inputs)["total"])
    assert "check_adl_step: all 12 cases passed" in capsys.readouterr().out

    def adl_loss(out, labels, masks, mu_r, sd_r, target, config, after_burn_in):  # as the notebook's exercise
        return adl_step(out, labels, masks, mu_r, sd_r, target, config, after_burn_in)["total"]

    check_adl_step(adl_loss)


def test_adl_step_checker_catches_a_missing_term():
    from adlkit.checks import check_adl_step
    from adlkit.methods.adl import adl_step

    def forgets_the_weights(out, labels, masks, mu_r, sd_r, target, config, after_burn_in):
        """Right in every respect but one: the reweighting (eqs. 8-10) is never switched on."""
        return adl_step(out, labels, masks, mu_r, sd_r, target, dataclasses.replace(config, use_reweight=False),
                        after_burn_in)["total"]

    with pytest.raises(AssertionError, match="FAILED: .*after burn-in"):
        check_adl_step(forgets_the_weights)

    def labels_as_target(out, labels, masks, mu_r, sd_r, target, config, after_burn_in):
        """Ignores the k-means target: BCE always against the labels."""
        return adl_step(out, labels, masks, mu_r, sd_r, None if target is None else labels.float(), config,
                        after_burn_in)["total"]

    with pytest.raises(AssertionError, match="FAILED: .*BCE target k-means"):
        check_adl_step(labels_as_target)

    def always_hard(out, labels, masks, mu_r, sd_r, target, config, after_burn_in):
        """Ignores burn-in: hard labels and uniform weights throughout."""
        return adl_step(out, labels, masks, mu_r, sd_r, target, config, False)["total"]

    with pytest.raises(AssertionError, match="FAILED"):
        check_adl_step(always_hard)


def test_cue_fusion_checker_catches_the_arithmetic_mean():
    from adlkit.checks import check_cue_fusion
    from adlkit.methods.multicue import normalize_cue

    def arithmetic(raw, normalizers, weights):
        total = sum(weights)
        return sum(w / total * normalize_cue(raw[k], *normalizers[k]) for k, w in zip(raw, weights))

    with pytest.raises(AssertionError, match="FAILED"):
        check_cue_fusion(arithmetic)


def test_cada_checkers_accept_the_reference_and_catch_wrong_answers(capsys):
    import numpy as np

    from adlkit import metrics
    from adlkit.checks import check_cada_regression_loss, check_unified_auroc
    from adlkit.methods.cada import regression_loss

    check_cada_regression_loss(regression_loss)

    def plain_l1(pred, target, alpha=0.1):  # no quadratic branch
        return (pred - target).abs().mean(0).sum()

    def one_mean(pred, target, alpha=0.1):  # the average of the two terms instead of their sum
        return regression_loss(pred, target, alpha) / 2

    for wrong in (plain_l1, one_mean):
        with pytest.raises(AssertionError, match="FAILED"):
            check_cada_regression_loss(wrong)

    def unified(scores, labels, classes):
        per = [metrics.image_auroc(scores[classes == c], labels[classes == c]) for c in sorted(set(classes.tolist()))]
        return metrics.image_auroc(scores, labels), float(np.mean(per))

    check_unified_auroc(unified)

    def swapped(scores, labels, classes):
        pooled, per = unified(scores, labels, classes)
        return per, pooled

    def weighted_by_size(scores, labels, classes):  # the per-class mean weighted by class size
        names = sorted(set(classes.tolist()))
        per = [metrics.image_auroc(scores[classes == c], labels[classes == c]) for c in names]
        sizes = [int((classes == c).sum()) for c in names]
        return metrics.image_auroc(scores, labels), float(np.average(per, weights=sizes))

    for wrong in (swapped, weighted_by_size):
        with pytest.raises(AssertionError, match="FAILED"):
            check_unified_auroc(wrong)
