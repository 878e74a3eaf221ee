"""The reviewer's check: a run's recorded metrics against a reference, each checked as its stage in the registry
declares it (``python -m ersam_lib compare``), the reference written from a run (``--record``), and the runner
printing the comparison at the end of a run of every chapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ersam_lib.app.cli import main
from ersam_lib.app.compare import (check_of, compare_run, default_reference, load_reference, make_reference,
                                   record_reference)
from ersam_lib.core.io import ArtifactError, atomic_write_json, read_json

from ersam_lib.core.stages import KINDS, flatten

from .test_runner import _write_notebook

METRICS = {
    "01_data": {"n_train": 160, "floor_acc_test": 0.65, "floor_mae_test": 0.45, "manifest_sha256": "ab" * 20,
                "build_total_s": 3.2, "splits": ["train", "val"], "class_set": "counts"},
    "05_search": {"baseline_test_acc": {"tcresnet8": 0.25}, "chosen": {"budget": "searched-1-58790d3a1fe9"},
                  "finalist_test_acc": {"searched-1-58790d3a1fe9": 0.375}, "beats_random": {"tpe": False},
                  "hypervolume_std": {"tpe": float("nan")}},
}


def _summary(run_dir: Path, metrics: dict, status: str = "ok") -> Path:
    chapters = {name: {"status": status, "wall_s": 12.5, "metrics": m} for name, m in metrics.items()}
    atomic_write_json(run_dir / "summary.json", {"scale": "smoke", "seed": 0, "created": "2026-12-01T10:00:00+00:00",
                                                 "environment": {"python": "3.11.7", "cpus": "2"},
                                                 "chapters": chapters})
    return run_dir


def _changed(metrics: dict, chapter: str, key: str, value: object) -> dict:
    return json.loads(json.dumps(metrics)) | {chapter: json.loads(json.dumps(metrics[chapter])) | {key: value}}


@pytest.mark.parametrize(("chapter", "name", "value", "kind"), [
    ("01_data", "floor_acc_test", 0.65, "accuracy"), ("04_supernet", "query_rate.full", 1.0, "accuracy"),
    ("01_data", "floor_mae_test", 0.45, "measure"), ("01_data", "n_train", 160, "count"),
    ("00_setup", "logmel_shape.0", 64, "count"), ("04_supernet", "claim_holds.tau0.5", True, "flag"),
    ("01_data", "manifest_sha256", "ec2afe578bc03ac28189f930c05bb59efd39ed4a", "hash"),
    ("04_supernet", "wall_s.full", 14.4, "machine"), ("03_teacher", "largest_subnet_train_s", 21.3, "machine"),
    ("05_search", "baseline_energy_mj.tcresnet8", 2.3, "machine"), ("00_setup", "torch", "2.14.1+cu130", "version"),
    ("00_setup", "threads", 2, "version"), ("01_data", "class_set", "counts", "text"),
    ("05_search", "chosen.budget", "searched-1-58790d3a1fe9", "name"), ("01_data", "mixtures_per_s", None, "machine"),
    ("04_supernet", "teacher_samples.selective-entropy-tau0.8", 11785, "measure"),
    ("04_supernet", "teacher_samples.full", 29760, "count"), ("03_teacher", "teacher_gap_val", 0.125, "difference"),
    ("04_supernet", "final_minus_full_acc_smallest", -0.05, "difference"),
    ("05_search", "supernet_cache_misses", 0, "cache"),  # a run resumed at chapter 5 reads its scores back
    ("02_profiling", "val_median_abs_err", 0.6, "machine"),  # chapter 2 measures the machine
    ("06_deploy", "run.wall_s", 10.0, "machine"),  # what the runner adds to every chapter
])
def test_each_metric_is_checked_as_its_stage_declares_it(chapter: str, name: str, value: object, kind: str) -> None:
    check = check_of(chapter, name, value)
    assert check["kind"] == kind and {k: v for k, v in check.items() if k != "kind"} == KINDS[kind] or \
        (kind == "name" and check["check"] is False)


def test_what_the_search_found_is_printed_not_checked() -> None:
    # chapter 2's latencies steer the search: which architectures it finds, and what chapter 6 deploys, may change
    for chapter, name, value in (("05_search", "baselines_dominated.tcresnet8", True),
                                 ("05_search", "ersam_budget_best_acc.0", 0.47),
                                 ("06_deploy", "int8_test_drop_points", -0.36), ("06_deploy", "meter_speed_x", 5569.4),
                                 ("06_deploy", "model_role", "most_accurate"),  # the budget's fallback on a loaded host
                                 ("06_deploy", "meter_program", "searched-1-381aae834e2a_int8.pte")):
        assert check_of(chapter, name, value)["check"] is False, name
    assert check_of("05_search", "baseline_test_acc.tcresnet8", 0.53) == {"kind": "accuracy", "abs_tol": 0.03}
    assert check_of("06_deploy", "int8_test_acc.countnet_crnn", 0.46)["kind"] == "accuracy"
    assert check_of("06_deploy", "models.2", "tcresnet8") == {"kind": "name"}  # a name without an id: exact


def test_a_metric_no_stage_declares_has_no_check() -> None:
    assert check_of("03_teacher", "val_median_abs_err", 0.6) is None  # chapter 2's, not chapter 3's
    assert check_of("09_nowhere", "acc", 0.5) is None
    assert check_of("04_supernet", "acc_largest", 0.5) is None  # declared as a dict of variants only


def test_every_metric_of_the_committed_reference_is_declared() -> None:
    ref = load_reference(default_reference("tutorial"))
    undeclared = [f"{c}/{m}" for c, metrics in ref["chapters"].items() for m, e in metrics.items()
                  if check_of(c, m, e["value"]) is None]
    assert undeclared == []
    assert all(set(e) <= {"value", "spread"} for metrics in ref["chapters"].values() for e in metrics.values())


def test_flatten_names_every_leaf() -> None:
    assert flatten({"a": {"b": [1, {"c": 2}]}, "d": None}) == {"a.b.0": 1, "a.b.1.c": 2, "d": None}


def test_a_run_is_within_its_own_reference_and_out_of_it_where_a_metric_moved(tmp_path: Path) -> None:
    run = _summary(tmp_path / "run", METRICS)
    ref = record_reference(run, tmp_path / "ref.json", command="python -m ersam_lib run --scale smoke ...")
    recorded = load_reference(ref)
    assert recorded["recorded"]["command"].startswith("python -m ersam_lib run") and recorded["recorded"]["machine"]
    assert recorded["chapters"]["01_data"]["floor_acc_test"] == {"value": 0.65}  # how it is checked: the registry's
    assert compare_run(run, ref).ok

    cases = [("01_data", "floor_acc_test", 0.67, True), ("01_data", "floor_acc_test", 0.69, False),
             ("01_data", "floor_mae_test", 0.49, True), ("01_data", "floor_mae_test", 0.5, False),
             ("01_data", "n_train", 161, False), ("01_data", "build_total_s", 99.0, True),
             ("01_data", "class_set", "levels", False), ("01_data", "manifest_sha256", "cd" * 20, False),
             ("05_search", "chosen", {"budget": "searched-2-0123456789ab"}, True),
             ("05_search", "beats_random", {"tpe": True}, True),  # what the search found: printed only
             ("05_search", "baseline_test_acc", {"tcresnet8": 0.2}, False)]
    for chapter, key, value, ok in cases:
        run = _summary(tmp_path / f"run_{key}_{value}", _changed(METRICS, chapter, key, value))
        result = compare_run(run, ref)
        assert result.ok == ok, f"{key}={value}: {result.report()}"
        if not ok:
            assert [f"{r.chapter}/{r.metric}" for r in result.failures][0].startswith(f"{chapter}/{key}")
            assert "NOT:" in result.report().splitlines()[-1]


def test_missing_metrics_fail_unless_keyed_by_a_searched_architecture(tmp_path: Path) -> None:
    ref = record_reference(_summary(tmp_path / "run", METRICS), tmp_path / "ref.json")
    other_search = _changed(METRICS, "05_search", "finalist_test_acc", {"searched-0-aaaaaaaaaaaa": 0.5})
    result = compare_run(_summary(tmp_path / "other", other_search), ref)
    verdicts = {r.metric: r.verdict for r in result.rows if r.chapter == "05_search"}
    assert result.ok and verdicts["finalist_test_acc.searched-1-58790d3a1fe9"] == "absent"
    assert verdicts["finalist_test_acc.searched-0-aaaaaaaaaaaa"] == "new"
    no_floor = {"01_data": {k: v for k, v in METRICS["01_data"].items() if k != "floor_acc_test"}}
    result = compare_run(_summary(tmp_path / "short", METRICS | no_floor), ref)
    assert [(r.metric, r.verdict) for r in result.failures] == [("floor_acc_test", "missing")]
    failed = compare_run(_summary(tmp_path / "failed", METRICS, status="failed"), ref)
    assert {r.metric for r in failed.failures} == {"run.status"}
    # an unchecked list (the finalists chapter 5 found) may be shorter in another run: no failure
    three = _changed(METRICS, "05_search", "finalists", [f"searched-{i}-{i:012x}" for i in range(3)])
    ref3 = record_reference(_summary(tmp_path / "three", three), tmp_path / "ref3.json")
    shorter = compare_run(_summary(tmp_path / "two", _changed(METRICS, "05_search", "finalists",
                                                               [f"searched-{i}-{i:012x}" for i in range(2)])), ref3)
    verdicts = {r.metric: r.verdict for r in shorter.rows if r.chapter == "05_search"}
    assert shorter.ok and verdicts["finalists.2"] == "absent" and verdicts["finalists.1"] == "info"


def test_the_reference_is_refused_for_another_scale_a_damaged_file_or_an_incomplete_run(tmp_path: Path) -> None:
    run = _summary(tmp_path / "run", METRICS)
    ref = record_reference(run, tmp_path / "ref.json")
    other = read_json(ref) | {"scale": "tutorial"}
    atomic_write_json(tmp_path / "tutorial.json", other)
    with pytest.raises(ValueError, match="holds SCALE=tutorial"):
        compare_run(run, tmp_path / "tutorial.json")
    bad = read_json(ref)
    bad["chapters"]["01_data"]["floor_acc_test"]["spread"] = {"value": 0.6, "abs_tol": -1}
    atomic_write_json(tmp_path / "bad.json", bad)
    with pytest.raises(ArtifactError, match=r"bad\.json: 01_data/floor_acc_test has a spread abs_tol=-1"):
        compare_run(run, tmp_path / "bad.json")
    with pytest.raises(ValueError, match="not 'ok'"):
        make_reference(_summary(tmp_path / "failed", METRICS, status="failed"))


def test_the_compare_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = _summary(tmp_path / "run", METRICS)
    ref = tmp_path / "ref.json"
    assert main(["compare", str(run), "--record", "--reference", str(ref)]) == 0 and ref.exists()
    assert main(["compare", str(run), "--reference", str(ref)]) == 0
    out = capsys.readouterr().out
    assert "ok  01_data        floor_acc_test" in out and "10 of 10 checked metrics within tolerance" in out
    moved = _summary(tmp_path / "moved", _changed(METRICS, "01_data", "floor_acc_test", 0.5))
    assert main(["compare", str(moved), "--reference", str(ref)]) == 1
    assert "OUT  01_data        floor_acc_test" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "nowhere"), "--reference", str(ref)]) == 2
    assert main(["compare", str(run), "--reference", str(tmp_path / "none.json")]) == 2
    assert "no reference" in capsys.readouterr().err


def test_the_runner_prints_the_comparison_after_a_run_of_every_chapter(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write_notebook(nbs / "01_data.ipynb", "from ersam_lib.core.rundir import record_metrics\n"
                                           "record_metrics(RUN_DIR, 'data', {'K': SEED + 2})")
    run = tmp_path / "run"
    args = ["run", "--scale", "smoke", "--run-dir", str(run), "--notebooks", str(nbs)]
    assert main(args + ["--reference", str(tmp_path / "none.json")]) == 0
    assert "compare: skipped: no reference" in capsys.readouterr().err
    ref = read_json(record_reference(run, tmp_path / "ref.json"))
    ref["chapters"]["01_data"]["K"]["value"] = 3  # the run records K = 2
    atomic_write_json(tmp_path / "ref.json", ref)
    assert main(args + ["--reference", str(tmp_path / "ref.json")]) == 0  # print only: the run succeeded
    captured = capsys.readouterr()
    assert "OUT  01_data        K" in captured.out
    assert "WARNING: 1 metric(s) out of tolerance" in captured.err and "the run itself succeeded" in captured.err


@pytest.mark.notebooks
def test_the_smoke_run_against_a_reference_recorded_from_it(smoke_run_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    ref = tmp_path / "reference_smoke.json"
    assert main(["compare", str(smoke_run_dir), "--record", "--reference", str(ref)]) == 0
    recorded = load_reference(ref)
    chapters = read_json(smoke_run_dir / "summary.json")["chapters"]
    assert set(recorded["chapters"]) == set(chapters)
    kinds = {check_of(c, m, e["value"])["kind"] for c, metrics in recorded["chapters"].items()
             for m, e in metrics.items()}
    assert {"machine", "accuracy", "count"} <= kinds
    assert main(["compare", str(smoke_run_dir), "--reference", str(ref)]) == 0
    report = capsys.readouterr().out
    assert "NOT:" not in report and "within tolerance" in report.splitlines()[-1]


def test_a_reference_recorded_with_spread_from_admits_an_independent_run(tmp_path: Path) -> None:
    """Two runs on two CPUs: where the other run lies outside a default tolerance, the new reference's tolerance is
    widened just enough to admit it and says so; exact entries and printed-only entries are left alone."""
    other = _summary(tmp_path / "other", _changed(_changed(METRICS, "01_data", "floor_acc_test", 0.705),
                                                  "01_data", "floor_mae_test", 0.55))
    other_ref = record_reference(other, tmp_path / "other.json")
    spread = read_json(other_ref)
    spread["recorded"]["machine"]["cpu_capability"] = "AVX2"
    atomic_write_json(other_ref, spread)
    other_ref_moved = _summary(tmp_path / "moved", _changed(METRICS, "01_data", "n_train", 161))
    moved = record_reference(other_ref_moved, tmp_path / "moved.json")

    run = _summary(tmp_path / "run", METRICS)
    ref = load_reference(record_reference(run, tmp_path / "ref.json", spread_from=other_ref))
    acc, mae = ref["chapters"]["01_data"]["floor_acc_test"], ref["chapters"]["01_data"]["floor_mae_test"]
    assert acc["spread"]["abs_tol"] == 0.06 and acc["spread"]["value"] == 0.705 and acc["spread"]["cpu"] == "AVX2"
    assert mae["spread"]["rel_tol"] == 0.23 and mae["spread"]["value"] == 0.55  # 0.10 / 0.45 = 22.2 %, rounded up
    assert ref["chapters"]["01_data"]["n_train"] == {"value": 160}
    assert "spread" not in ref["chapters"]["01_data"]["manifest_sha256"]
    assert compare_run(other, tmp_path / "ref.json").ok and compare_run(run, tmp_path / "ref.json").ok
    assert not compare_run(_summary(tmp_path / "far", _changed(METRICS, "01_data", "floor_acc_test", 0.72)),
                           tmp_path / "ref.json").ok
    rerun = load_reference(record_reference(run, tmp_path / "rerun.json", spread_from=tmp_path / "ref.json"))
    assert rerun["chapters"]["01_data"]["floor_acc_test"] == acc  # the same value again: its measured spread stays
    nearby = _summary(tmp_path / "next", _changed(METRICS, "01_data", "floor_acc_test", 0.66))
    moved_on = load_reference(record_reference(nearby, tmp_path / "next.json", spread_from=tmp_path / "ref.json"))
    assert moved_on["chapters"]["01_data"]["floor_acc_test"] == {"value": 0.66}  # another value: the default again
    exact = load_reference(record_reference(run, tmp_path / "exact.json", spread_from=moved))
    assert exact["chapters"]["01_data"]["n_train"] == {"value": 160}  # a count stays exact
    assert not compare_run(other_ref_moved, tmp_path / "exact.json").ok


def test_the_comparison_says_when_the_reference_ran_on_another_instruction_set(tmp_path: Path) -> None:
    run = _summary(tmp_path / "run", METRICS)
    ref_path = record_reference(run, tmp_path / "ref.json")
    assert "instruction set" not in compare_run(run, ref_path).report()  # neither records one: nothing to say
    ref = read_json(ref_path)
    ref["recorded"]["machine"]["cpu_capability"] = "AVX2"
    atomic_write_json(ref_path, ref)
    report = compare_run(run, ref_path).report()
    assert "the reference's CPU ran AVX2" in report and report.splitlines()[-1].startswith("[ersam] compare")


def test_tolerances_come_from_the_registry_and_an_undeclared_metric_fails(tmp_path: Path) -> None:
    """Issue 31: a tolerance written into a reference entry is not the reference's to set (only a recorded spread
    widens one), and a run that records a metric its stage does not declare (a rename) fails the comparison."""
    run = _summary(tmp_path / "run", METRICS)
    ref = read_json(record_reference(run, tmp_path / "ref.json"))
    ref["chapters"]["01_data"]["floor_acc_test"] |= {"abs_tol": 0.5, "kind": "measure"}  # ignored
    atomic_write_json(tmp_path / "ref.json", ref)
    moved = _summary(tmp_path / "moved", _changed(METRICS, "01_data", "floor_acc_test", 0.75))
    assert [r.metric for r in compare_run(moved, tmp_path / "ref.json").failures] == ["floor_acc_test"]
    renamed = {"01_data": {("floor_accuracy_test" if k == "floor_acc_test" else k): v
                           for k, v in METRICS["01_data"].items()}}
    result = compare_run(_summary(tmp_path / "renamed", METRICS | renamed), tmp_path / "ref.json")
    assert {(r.metric, r.verdict) for r in result.failures} == {("floor_accuracy_test", "undeclared"),
                                                                 ("floor_acc_test", "missing")}
    with pytest.raises(ValueError, match="no stage declares: 01_data/floor_accuracy_test"):
        make_reference(_summary(tmp_path / "renamed2", METRICS | renamed))


def test_the_readme_quotes_the_reference_runs_time_table() -> None:
    """Issue 31: one time table in the README, generated from the committed reference (``compare --times``)."""
    from ersam_lib.app.compare import time_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    quoted = readme.split("<!-- time-table:begin -->\n", 1)[1].split("\n<!-- time-table:end -->", 1)[0]
    assert quoted == time_table(load_reference(default_reference("tutorial")))
    assert "| | all chapters |" in quoted and quoted.count("\n| 0") == 7
