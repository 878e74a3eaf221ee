from __future__ import annotations

from pathlib import Path

import pytest

from ersam_lib.io import atomic_path, atomic_write_json, read_json
from ersam_lib.rundir import load_metrics, record_metrics, require, stage_dir
from ersam_lib.scales import check_scale


def test_atomic_write_leaves_nothing_after_a_crash(tmp_path: Path) -> None:
    target = tmp_path / "table.json"
    atomic_write_json(target, {"old": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("killed mid-write")
    assert read_json(target) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]


def test_record_metrics_merges(tmp_path: Path) -> None:
    record_metrics(tmp_path, "01", {"a": 1})
    record_metrics(tmp_path, "01", {"b": 2.5})
    assert load_metrics(tmp_path, "01") == {"a": 1, "b": 2.5}
    assert load_metrics(tmp_path, "02") == {}


def test_layout_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        stage_dir(tmp_path, "nonsense")
    with pytest.raises(FileNotFoundError, match="run chapter 01"):
        require(tmp_path, "manifest")
    with pytest.raises(ValueError, match="smoke, tutorial, paper"):
        check_scale("huge")
