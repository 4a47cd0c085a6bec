"""adlkit.runs: the one schema of a result row and the one grid runner every `run METHOD` uses."""
import json
from pathlib import Path

import pytest

from adlkit import runs, training
from adlkit.runs import Cell, RunRecord

RESULTS = Path(__file__).resolve().parents[1] / "figures" / "results"


def _record(seed: int, category: str = "tile", **fields) -> RunRecord:
    return RunRecord(method="toy", dataset="synthetic", category=category, seed=seed, config={"seed": seed, "k": 3},
                     backbone="efficientnet_lite0", image_size=64, **fields)


def _cells(seeds, calls: list) -> tuple[list[Cell], object]:
    def run_cell(cell: Cell) -> list[RunRecord]:
        calls.append(cell.name)
        r = cell.planned[0]
        return [RunRecord.from_row({**r.to_row(), "device": "cpu", "image_AUROC": 0.5 + r.seed / 10,
                                    "n_test": 4}, stamped=False)]

    return [Cell(f"toy seed={s}", [_record(s)]) for s in seeds], run_cell


def test_every_committed_result_row_is_a_run_record():
    files = sorted(RESULTS.glob("cli_*.json"))
    assert files, "figures/results holds the committed CLI result files"
    n = 0
    for path in files:
        for i, row in enumerate(json.loads(path.read_text())):
            record = RunRecord.from_row(row, where=f"{path.name}, run {i}")
            assert RunRecord.from_row(record.to_row()) == record  # the row is the record, nothing lost
            n += 1
    assert n > 100


def test_a_row_with_an_unknown_or_missing_key_is_refused_with_the_fix():
    row = {**_record(0).to_row(), "wall_seconds": 1.0, "commit": "abc"}
    assert RunRecord.from_row(row).metrics == {}
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['image_AUROCC'\].*add the field to RunRecord"):
        RunRecord.from_row({**row, "image_AUROCC": 0.9})
    with pytest.raises(ValueError, match=r"missing field\(s\) \['commit'\]"):
        RunRecord.from_row({k: v for k, v in row.items() if k != "commit"})
    # a row being built has no wall time or commit yet: run_grid stamps them
    assert RunRecord.from_row({k: v for k, v in row.items() if k != "commit"}, stamped=False).commit is None
    metric_row = {**row, "crack_image_AUROC": 0.7, "pixel_AUPRO": 0.5, "n_bank": 10, "image_F1max_threshold": 1.5}
    assert set(RunRecord.from_row(metric_row).metrics) == {"crack_image_AUROC", "pixel_AUPRO", "n_bank",
                                                           "image_F1max_threshold"}


def test_run_grid_stamps_rows_resumes_and_shards(tmp_path, capsys):
    out, calls = tmp_path / "r.json", []
    cells, run_cell = _cells([0, 1, 2], calls)
    new = runs.run_grid(cells, run_cell, out, shard=(1, 2))  # every 2nd cell from the 2nd: seed 1 only
    assert calls == ["toy seed=1"] and [r.seed for r in new] == [1]
    row = json.loads(out.read_text())[0]
    assert row["commit"] == runs.provenance()["commit"] and row["wall_seconds"] >= 0
    assert set(row["versions"]) == {"python", "torch", "timm", "numpy"}
    assert row["image_AUROC"] == 0.6 and row["n_test"] == 4 and "gallery" not in row
    with pytest.raises(FileExistsError, match="--resume"):  # never appends to a file without being asked
        runs.run_grid(cells, run_cell, out)
    runs.run_grid(cells, run_cell, out, resume=True)
    assert calls == ["toy seed=1", "toy seed=0", "toy seed=2"]
    assert "toy seed=1: already in" in capsys.readouterr().out
    resumed = json.loads(out.read_text())

    calls2, whole = [], tmp_path / "whole.json"
    runs.run_grid(*_cells([0, 1, 2], calls2), whole)
    strip = [{k: v for k, v in r.items() if k != "wall_seconds"} for r in resumed]
    assert sorted(strip, key=lambda r: r["seed"]) == [{k: v for k, v in r.items() if k != "wall_seconds"}
                                                      for r in json.loads(whole.read_text())]
    runs.run_grid(*_cells([5], []), out, overwrite=True)  # --overwrite starts the file again
    assert [r["seed"] for r in training.read_results(out)] == [5]


def test_save_maps_needs_an_output_file():
    with pytest.raises(ValueError, match="add --out"):
        runs.run_grid(*_cells([0], []), None, save_maps=True)


def test_a_cell_with_several_rows_is_skipped_only_when_all_are_done(tmp_path):
    out, calls = tmp_path / "r.json", []

    def run_cell(cell):
        calls.append(cell.name)
        return [RunRecord.from_row(r.to_row(), stamped=False) for r in cell.planned]

    both = Cell("two rows", [_record(0, ablation="a"), _record(0, ablation="b")])
    runs.run_grid([Cell("one row", [_record(0, ablation="a")])], run_cell, out)
    runs.run_grid([both], run_cell, out, resume=True)  # row b is missing: the cell runs
    runs.run_grid([both], run_cell, out, resume=True)  # both are there now: skipped
    assert calls == ["one row", "two rows"]


def test_resume_recognises_a_row_written_before_a_config_field_existed(tmp_path, capsys):
    """A field added later (with the old behaviour as its default) is absent from older rows: given the config's
    defaults, resuming fills it in and skips the run; without them the run would be made again."""
    out, calls = tmp_path / "r.json", []
    cells, run_cell = _cells([0], calls)
    runs.run_grid(cells, run_cell, out)
    old = json.loads(out.read_text())
    del old[0]["config"]["k"]  # the row of a version before the field "k" existed
    training.write_json(out, old)
    runs.run_grid(cells, run_cell, out, resume=True, defaults={"seed": 0, "k": 3})
    assert calls == ["toy seed=0"] and "skipped (--resume)" in capsys.readouterr().out
    runs.run_grid(cells, run_cell, out, resume=True, defaults={"seed": 0, "k": 4})  # another default: not the same run
    runs.run_grid(*_cells([1], calls), out, resume=True)
    assert calls == ["toy seed=0", "toy seed=0", "toy seed=1"]


def test_a_maps_or_model_file_of_another_run_is_never_replaced_on_resume(tmp_path):
    from adlkit.runs import _check_replace

    path = tmp_path / "m.npz"
    path.write_bytes(b"x")
    mine, other = _record(0), _record(1)
    _check_replace(path, "maps", mine.run_id(), mine, resume=True, overwrite=False)  # this run's leftover: replaced
    _check_replace(path, "maps", other.run_id(), mine, resume=False, overwrite=True)  # --overwrite: replaced
    for stored, resume in ((other.run_id(), True), (None, True), (other.run_id(), False)):
        with pytest.raises(FileExistsError, match="another run"):
            _check_replace(path, "maps", stored, mine, resume=resume, overwrite=False)
    with pytest.raises(FileExistsError, match="earlier attempt: pass --resume"):
        _check_replace(path, "maps", mine.run_id(), mine, resume=False, overwrite=False)
