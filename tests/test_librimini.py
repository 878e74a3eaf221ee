"""Chapter 1's real speech: the vendored copy matches its checksums, the source reads it without configuration,
and a missing or corrupt file is an error that names it (or is skipped and named)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep.sources import LibriMiniSource, SourceError
from data_prep.sources.librimini import CHECKSUMS, DEFAULT_ROOT, read_checksums

ROOT = Path(__file__).resolve().parents[1]
VENDORED = ROOT / "data" / "librispeech-mini"


def test_vendored_copy_matches_its_checksum_manifest():
    listed = read_checksums(VENDORED)
    found = {p.relative_to(VENDORED).as_posix() for p in VENDORED.rglob("*.flac")}
    assert len(listed) == 351 and set(listed) == found  # every FLAC listed, nothing unlisted
    for rel, digest in listed.items():
        assert hashlib.sha256((VENDORED / rel).read_bytes()).hexdigest() == digest, rel
    readme = (VENDORED / "README.md").read_text()
    for needed in ("CC BY 4.0", "creativecommons.org/licenses/by/4.0", "Panayotov", "resemble-ai/Resemblyzer",
                   "Apache License 2.0", CHECKSUMS):
        assert needed in readme, needed
    assert "Apache License" in (VENDORED / "LICENSE-Apache-2.0.txt").read_text()


def test_the_repository_copy_is_found_without_configuration(monkeypatch):
    monkeypatch.delenv("ERSAM_LIBRIMINI", raising=False)
    src = LibriMiniSource()
    assert Path(src.root) == DEFAULT_ROOT == VENDORED and src.skipped == []
    idx = src.index()
    per_subset = idx.groupby("subset")["speaker"].nunique().to_dict()
    assert per_subset == {"test-other": 10, "train-clean-100": 251}
    assert idx.groupby("subset").size().to_dict() == {"test-other": 100, "train-clean-100": 251}
    assert src.speakers()["1688"][:2] == ["1688-142285-0000", "1688-142285-0001"]
    audio = src.load("1688-142285-0000")
    assert audio.dtype == np.float32 and 1.0 < len(audio) / 16000 < 35 and src.vad("1688-142285-0000").any()
    assert src.describe()["checksums_verified"] is True


def _small_copy(dst: Path, n_train: int = 4, n_other: int = 1) -> Path:
    """A few files of the vendored copy with their SHA256SUMS lines (a miniature of the layout)."""
    listed = read_checksums(VENDORED)
    keep = [r for r in listed if r.startswith("train-clean-100/")][:n_train]
    keep += [r for r in listed if r.startswith("test-other/")][: 10 * n_other]
    for rel in keep:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(VENDORED / rel, dst / rel)
    (dst / CHECKSUMS).write_text("".join(f"{listed[r]}  {r}\n" for r in keep))
    return dst


def test_root_from_parameter_or_environment(tmp_path, monkeypatch):
    copy = _small_copy(tmp_path / "copy")
    assert len(LibriMiniSource(copy).index()) == 14
    monkeypatch.setenv("ERSAM_LIBRIMINI", str(copy))
    assert Path(LibriMiniSource().root) == copy
    monkeypatch.setenv("ERSAM_LIBRIMINI", str(tmp_path / "nowhere"))
    with pytest.raises(SourceError, match="nowhere does not exist.*ERSAM_LIBRIMINI"):
        LibriMiniSource()


def test_a_corrupt_file_is_named_or_skipped(tmp_path):
    copy = _small_copy(tmp_path)
    victim = sorted((copy / "train-clean-100").glob("*.flac"))[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte mid-stream: the header still reads fine
    victim.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=f"{victim.name}: SHA-256 differs"):
        LibriMiniSource(copy, on_error="raise")
    src = LibriMiniSource(copy, on_error="skip")
    assert [s["path"] for s in src.skipped] == [str(victim)] and "corrupt" in src.skipped[0]["error"]
    assert victim.stem not in set(src.index()["utt_id"]) and len(src.index()) == 13


def test_a_missing_or_unlisted_file_is_named_or_skipped(tmp_path):
    copy = _small_copy(tmp_path)
    gone = sorted((copy / "test-other").rglob("*.flac"))[0]
    gone.unlink()
    with pytest.raises(SourceError, match=f"{gone.name}: listed in SHA256SUMS but missing"):
        LibriMiniSource(copy, on_error="raise")
    src = LibriMiniSource(copy)
    assert src.skipped == [{"path": str(gone), "error": "listed in SHA256SUMS but missing"}]
    shutil.copyfile(VENDORED / gone.relative_to(copy), gone)
    extra = copy / "train-clean-100" / "9999-1-0000.flac"
    sf.write(extra, np.zeros(16000, np.float32), 16000)
    with pytest.raises(SourceError, match="9999-1-0000.flac: not listed"):
        LibriMiniSource(copy, on_error="raise")


def test_without_checksums_a_broken_file_still_names_itself(tmp_path):
    copy = _small_copy(tmp_path)
    (copy / CHECKSUMS).unlink()
    victim, stub = sorted((copy / "train-clean-100").glob("*.flac"))[:2]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # the header survives, the audio does not
    stub.write_bytes(stub.read_bytes()[:200])  # not even a header
    src = LibriMiniSource(copy)
    assert src.describe()["checksums_verified"] is False
    assert [s["path"] for s in src.skipped] == [str(stub)]
    with pytest.raises(SourceError, match=f"cannot read audio file .*{victim.name}"):
        src.load(victim.stem)
    (copy / "test-other").rename(copy / "elsewhere")
    with pytest.raises(SourceError, match="test-other is missing"):
        LibriMiniSource(copy)


def test_decoded_audio_is_cached_read_only_and_not_pickled(tmp_path):
    import pickle

    src = LibriMiniSource(_small_copy(tmp_path))
    utt = src.index()["utt_id"].iloc[0]
    a = src.load(utt)
    assert src.load(utt) is a and not a.flags.writeable
    assert len(pickle.loads(pickle.dumps(src))._cache) == 0
