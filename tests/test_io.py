from __future__ import annotations

from pathlib import Path

import pytest

from ersam_lib.core.io import atomic_path, atomic_write_json, read_json
from ersam_lib.core.rundir import load_metrics, record_metrics, require, stage_dir
from ersam_lib.core.scales import check_scale


def test_atomic_write_leaves_nothing_after_a_crash(tmp_path: Path) -> None:
    target = tmp_path / "table.json"
    atomic_write_json(target, {"old": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("killed mid-write")
    assert read_json(target) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]


def test_record_metrics_merges_and_refuses_what_the_stage_does_not_declare(tmp_path: Path) -> None:
    record_metrics(tmp_path, "data", {"K": 3})
    record_metrics(tmp_path, "data", {"floor_acc_test": 0.25, "splits": ["train", "val"]})
    assert load_metrics(tmp_path, "01_data") == {"K": 3, "floor_acc_test": 0.25, "splits": ["train", "val"]}
    assert load_metrics(tmp_path, "02_profiling") == {}
    with pytest.raises(ValueError, match=r"stage 'data' does not declare the metric\(s\) floor_accuracy_test"):
        record_metrics(tmp_path, "data", {"floor_accuracy_test": 0.25})  # a renamed metric, not declared
    with pytest.raises(ValueError, match="unknown stage '01'"):
        record_metrics(tmp_path, "01", {"K": 3})  # stages are named by their labels


def test_layout_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        stage_dir(tmp_path, "nonsense")
    with pytest.raises(FileNotFoundError, match="run chapter 01"):
        require(tmp_path, "manifest")
    with pytest.raises(ValueError, match="smoke, tutorial, paper"):
        check_scale("huge")


def test_damaged_files_raise_one_line_naming_the_file(tmp_path: Path) -> None:
    import numpy as np

    from ersam_lib.core.io import ArtifactError, load_array
    from ersam_lib.core.rundir import read_run_json

    bad = tmp_path / "data" / "dataset.json"
    bad.parent.mkdir()
    bad.write_text('{"classes": [')
    with pytest.raises(ArtifactError, match=r"dataset\.json is not valid JSON") as info:
        read_json(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(ArtifactError, match=r"dataset\.json is not valid JSON .*--only 01$"):
        read_run_json(tmp_path, "dataset")  # names the chapter that rewrites it
    arr = tmp_path / "x.npy"
    np.save(arr, np.arange(1000.0))
    arr.write_bytes(arr.read_bytes()[:500])
    with pytest.raises(ArtifactError, match=r"x\.npy is not a readable NumPy array"):
        load_array(arr, mmap_mode="r")
    np.save(arr, np.array([{"a": 1}], dtype=object))  # an object array is a pickle
    with pytest.raises(ArtifactError, match=r"x\.npy is not a readable NumPy array"):
        load_array(arr)


def test_torch_load_refuses_a_pickle_payload_without_running_it(tmp_path: Path) -> None:
    import torch

    from ersam_lib.core.io import ArtifactError, atomic_torch_save, torch_load

    marker = tmp_path / "payload-ran"
    atomic_torch_save({"model": _Payload(marker)}, tmp_path / "checkpoint.pt")
    with pytest.raises(ArtifactError, match="refused to load it"):
        torch_load(tmp_path / "checkpoint.pt")
    assert not marker.exists()
    torch.load(tmp_path / "checkpoint.pt", weights_only=False)  # the payload is real: an unsafe load runs it
    assert marker.exists()
    atomic_torch_save({"model": {"w": torch.ones(2)}, "epoch": 3, "history": [{"loss": 0.5}]}, tmp_path / "ok.pt")
    assert torch_load(tmp_path / "ok.pt")["epoch"] == 3


class _Payload:
    """Pickles as a call that creates a file: proof that loading ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


_WRITER = """
import sys
from ersam_lib.core.io import update_json
for i in range(40):
    update_json(sys.argv[1], lambda d: (d or {}) | {f"{sys.argv[2]}-{i}": i})
"""


def test_update_json_keeps_every_update_of_two_processes(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "record.json"), name], env=env)
             for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert len(read_json(tmp_path / "record.json")) == 80  # no lost update


def test_check_run_dir_refuses_a_file_or_an_unwritable_folder(tmp_path: Path) -> None:
    import os

    from ersam_lib.core.rundir import check_run_dir

    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        check_run_dir(tmp_path / "afile")
    with pytest.raises(OSError, match="afile"):
        check_run_dir(tmp_path / "afile" / "run")
    assert check_run_dir(tmp_path / "new" / "run").is_dir()
    assert not (tmp_path / "later").exists() and check_run_dir(tmp_path / "later", create=False)
    readonly = tmp_path / "ro"
    readonly.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes anywhere a mode allows nothing: use a file system that refuses
        readonly = Path("/sys/ersam-check")
        if not Path("/sys").is_dir():
            pytest.skip("running as root without /sys")
    with pytest.raises(PermissionError, match="cannot"):
        check_run_dir(readonly / "run")


# --------------------------------------------------------------------------------------------- issue 30
def test_weights_are_checked_against_the_digest_recorded_beside_them(tmp_path: Path) -> None:
    """Item 3: a weight file changed after it was written is refused by its digest (a flipped bit in a float still
    loads); a missing record is refused too; the record is sha256sum's format."""
    import hashlib
    import subprocess

    import torch

    from ersam_lib.core.io import ArtifactError, atomic_torch_save, digest_path, torch_load

    from .hostile import flip_exponents

    path = tmp_path / "w.pt"
    atomic_torch_save({"w": torch.arange(64, dtype=torch.float32)}, path)
    assert digest_path(path).read_text() == f"{hashlib.sha256(path.read_bytes()).hexdigest()}  w.pt\n"
    check = subprocess.run(["sha256sum", "-c", digest_path(path).name], cwd=tmp_path, capture_output=True)
    assert check.returncode == 0
    flip_exponents(path)
    assert not torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(64, dtype=torch.float32))
    with pytest.raises(ArtifactError, match=r"w\.pt does not match the SHA-256 recorded in w\.pt\.sha256"):
        torch_load(path)
    digest_path(path).unlink()
    with pytest.raises(ArtifactError, match="no readable digest record"):
        torch_load(path)


def test_written_files_have_the_ordinary_mode_and_json_holds_no_nan(tmp_path: Path) -> None:
    """Item 12: files are created with the mode open() gives (mkstemp's 0600 is not kept), and JSON records write
    null where Python would write NaN or Infinity (invalid JSON for other tools)."""
    import json
    import os
    import stat

    import numpy as np

    mask = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "m.json", {"a": float("nan"), "b": [np.float32("inf"), 1.5],
                                                 "c": np.array([np.nan, 2.0])})
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=refuse) == {
        "a": None, "b": [None, 1.5], "c": [None, 2.0]}


def test_a_full_disk_is_named_with_the_file(tmp_path: Path, monkeypatch) -> None:
    """Item 11: numpy's "N requested and M written" (no errno) becomes one line naming the file and the full disk;
    the temporary file is gone."""
    import numpy as np

    def short_write(file, arr, **kwargs):
        raise OSError("1032192 requested and 720832 written")

    monkeypatch.setattr(np, "save", short_write)
    with pytest.raises(OSError, match=r"no space left on the device writing .*x\.npy") as err:
        with atomic_path(tmp_path / "x.npy") as tmp:
            np.save(tmp, np.zeros(10))
    assert "\n" not in str(err.value) and list(tmp_path.iterdir()) == []


def test_a_real_full_disk(small_disk: Path) -> None:
    """Item 11 on a real 256-kB file system: an array too large for it."""
    import numpy as np

    with pytest.raises(OSError, match=r"no space left on the device writing .*big\.npy"):
        with atomic_path(small_disk / "big.npy") as tmp:
            np.save(tmp, np.zeros(100_000))
    assert list(small_disk.iterdir()) == []
