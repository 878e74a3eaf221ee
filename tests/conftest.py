"""Shared fixtures. ``smoke_run`` executes every chapter notebook once per test session at SCALE=smoke through the
pipeline runner (as the recommenders project tests its notebooks); chapter tests assert on the metrics it recorded.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SMOKE_SEED = 0


@pytest.fixture(scope="session")
def smoke_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN_DIR of one smoke-scale run of the whole pipeline (all notebooks, in order).

    ``ERSAM_SMOKE_RUN_DIR=FOLDER`` reuses a finished smoke run instead (to iterate on the tests that only read it;
    CI never sets it)."""
    from ersam_lib.app.runner import run_pipeline

    if os.environ.get("ERSAM_SMOKE_RUN_DIR"):
        return Path(os.environ["ERSAM_SMOKE_RUN_DIR"])
    run_dir = tmp_path_factory.mktemp("smoke_run")
    os.environ.setdefault("ERSAM_PROGRESS", "0")
    run_pipeline(run_dir=run_dir, scale="smoke", seed=SMOKE_SEED, notebooks_dir=NOTEBOOKS)
    return run_dir


@pytest.fixture(scope="session")
def smoke_run(smoke_run_dir: Path) -> dict:
    """The parsed ``summary.json`` of the smoke run."""
    from ersam_lib.core.io import read_json

    return read_json(smoke_run_dir / "summary.json")


@pytest.fixture(scope="session")
def smoke_book(smoke_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The html folder of the book rendered from the smoke run into a temporary folder; the checkout's book/ is
    left exactly as it was."""
    from ersam_lib.app.book import BOOK_DIR, build_book

    checkout = {p: p.stat().st_mtime_ns for p in BOOK_DIR.rglob("*")}
    html = build_book(smoke_run_dir, out_dir=tmp_path_factory.mktemp("smoke_book")).parent
    assert {p: p.stat().st_mtime_ns for p in BOOK_DIR.rglob("*")} == checkout, "the render wrote into book/"
    return html


def chapter_metrics(summary: dict, prefix: str) -> dict:
    """Metrics recorded by the chapter whose notebook name starts with ``prefix`` (e.g. ``"01"``)."""
    for name, entry in summary["chapters"].items():
        if name.startswith(prefix + "_"):
            assert entry["status"] == "ok", f"{name} failed: {entry.get('error')}"
            return entry["metrics"]
    raise AssertionError(f"no chapter {prefix} in the smoke run")


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A 256-kB tmpfs mounted for the test (a full disk, for real); skipped where mounting is not allowed."""
    import subprocess

    folder = tmp_path / "small_disk"
    folder.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()[:200]}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
