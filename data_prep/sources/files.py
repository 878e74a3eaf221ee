"""Speech sources read from audio files: real LibriSpeech and any speaker-labelled folder (chapter 1).

Files are validated when the source is opened (``soundfile.info``); an unreadable or corrupt file is skipped and
reported in ``skipped`` (``on_error="skip"``) or raises :class:`SourceError` (``on_error="raise"``). Audio at another
sample rate is resampled to 16 kHz; multi-channel audio is averaged to mono. Decoded utterances are kept in a
bounded per-process cache: a mixture loads each of its speakers' files, and decoding FLAC, not mixing, was what
limited rendering (12 instead of ~100 mixtures/s per process).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from collections import OrderedDict
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import resample_poly

from ersam_lib.core.io import sha256_file
from ersam_lib.core.progress import progress

from .base import SourceError, SpeechSource

AUDIO_SUFFIXES = (".wav", ".flac")
LIBRISPEECH_URL = "http://www.openslr.org/resources/12/{subset}.tar.gz"
# SHA-256 of the OpenSLR archives (the values torchaudio.datasets.LibriSpeech verifies against).
LIBRISPEECH_SHA256 = {
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
}


DOWNLOAD_TIMEOUT_S = 60.0  # a connection that sends nothing for this long is given up (the download resumes)


def read_audio(path: str | os.PathLike, sample_rate: int = 16_000) -> np.ndarray:
    """Mono float32 audio of a file at ``sample_rate`` (resampled when the file differs)."""
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for corrupt data
        raise SourceError(f"cannot read audio file {path}: {e}") from e
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        g = gcd(int(sr), sample_rate)
        audio = resample_poly(audio, sample_rate // g, int(sr) // g).astype(np.float32)
    return audio


class FileSource(SpeechSource):
    """Common code of the file-based sources: a table of (utt_id, speaker, path, sample rate, frames)."""

    cache_bytes: int = 320 << 20  # decoded audio kept per process (the repository's 65 minutes take 250 MB)

    def __init__(self, root: str | os.PathLike, on_error: str = "skip") -> None:
        super().__init__()
        self.root = Path(root)
        self.on_error = on_error
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cached = 0
        if not self.root.is_dir():
            raise SourceError(f"speech source root {self.root} does not exist or is not a directory")
        self._table = self._scan()
        if self._table.empty:
            raise SourceError(f"no readable {'/'.join(AUDIO_SUFFIXES)} files found under {self.root}")

    def _entries(self) -> list[tuple[str, str, Path]]:
        """(utt_id, speaker, path) of every candidate file."""
        raise NotImplementedError

    def _scan(self) -> pd.DataFrame:
        rows = []
        for utt_id, speaker, path in progress(self._entries(), desc=f"scanning {self.name} files"):
            try:
                info = sf.info(str(path))
                if info.frames <= 0:
                    raise RuntimeError("file holds no samples")
            except Exception as e:
                if self.on_error == "raise":
                    raise SourceError(f"unreadable audio file {path}: {e}") from e
                self.skipped.append({"path": str(path), "error": str(e).splitlines()[0][:200]})
                continue
            rows.append((utt_id, speaker, str(path), int(info.samplerate), int(info.frames)))
        return pd.DataFrame(rows, columns=["utt_id", "speaker", "path", "file_sample_rate", "file_frames"])

    def index(self) -> pd.DataFrame:
        return self._table

    def load(self, utt_id: str) -> np.ndarray:
        if utt_id in self._cache:
            self._cache.move_to_end(utt_id)
            return self._cache[utt_id]
        if not hasattr(self, "_paths"):
            self._paths = dict(zip(self._table["utt_id"], self._table["path"]))
        audio = read_audio(self._paths[utt_id], self.sample_rate)
        audio.flags.writeable = False  # shared by every caller: nobody may mix into it in place
        self._cache[utt_id] = audio
        self._cached += audio.nbytes
        while self._cached > self.cache_bytes and len(self._cache) > 1:
            self._cached -= self._cache.popitem(last=False)[1].nbytes
        return audio

    def __getstate__(self) -> dict:
        # Worker processes start with an empty cache (pickling hundreds of MB per task would cost more than it saves).
        state = super().__getstate__()
        state["_cache"], state["_cached"] = OrderedDict(), 0
        return state

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "root": str(self.root), "n_utterances": len(self._table),
                "seconds": float((self._table["file_frames"] / self._table["file_sample_rate"]).sum()),
                "skipped": self.skipped}

    def fingerprint(self) -> dict[str, Any]:
        # What the files are, not where they lie: a moved or copied checkout (the repository's librispeech-mini) or
        # data root serves the same audio. Without ``skipped``: building a manifest adds the silent files it finds.
        out = {k: v for k, v in self.describe().items() if k not in ("skipped", "root")}
        table = self._table[["utt_id", "speaker", "file_sample_rate", "file_frames"]]
        out["index_sha256"] = hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()
        return out


class FolderSource(FileSource):
    """``root/<speaker>/**/*.wav|flac``: any speaker-labelled recordings, e.g. a user's own."""

    name = "folder"

    def _entries(self) -> list[tuple[str, str, Path]]:
        out = []
        for spk_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for path in sorted(spk_dir.rglob("*")):
                if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
                    rel = path.relative_to(self.root).with_suffix("").as_posix()
                    out.append((rel, spk_dir.name, path))
        return out


class LibriSpeechSource(FileSource):
    """An extracted ``LibriSpeech/<subset>/<speaker>/<chapter>/<utt>.flac`` tree (root = it or its parent).

    ``subsets`` restricts which subsets are read (default: every subset folder present).
    """

    name = "librispeech"

    def __init__(self, root: str | os.PathLike, on_error: str = "skip", subsets: list[str] | None = None) -> None:
        self.subsets = subsets
        super().__init__(root, on_error)
        self._table["subset"] = [Path(p).parts[-4] for p in self._table["path"]]

    def _tree(self) -> Path:
        return self.root / "LibriSpeech" if (self.root / "LibriSpeech").is_dir() else self.root

    def _entries(self) -> list[tuple[str, str, Path]]:
        tree = self._tree()
        found = sorted(p.name for p in tree.iterdir() if p.is_dir())
        subsets = self.subsets or found
        missing = sorted(set(subsets) - set(found))
        if missing:
            raise SourceError(f"LibriSpeech subsets {missing} not found under {tree} (present: {found})")
        out = []
        for subset in subsets:
            for path in sorted((tree / subset).glob("*/*/*.flac")):
                out.append((path.stem, path.parent.parent.name, path))
        if not out:
            raise SourceError(f"{tree} holds no LibriSpeech FLAC files (expected <subset>/<speaker>/<chapter>/*.flac)")
        return out

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"subsets": self.subsets}


def download(url: str, dest: str | os.PathLike, sha256: str, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download ``url`` to ``dest`` and verify its SHA-256; resumable, never hangs on a stalled connection.

    Bytes arrive in ``dest.part``; a download that fails or stalls (no data for ``timeout_s``) keeps them, and the
    next call asks the server for the rest (an HTTP range request; a server that ignores it sends everything
    again). Only a file with the expected checksum is renamed to ``dest``; a mismatch deletes it.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as r:
            resumed = have > 0 and getattr(r, "status", None) == 206
            read = getattr(r, "read1", r.read)  # what has arrived: a stall must not lose the bytes already read
            with open(part, "ab" if resumed else "wb") as f:
                while block := read(1 << 20):
                    f.write(block)
    except urllib.error.HTTPError as e:
        if e.code != 416:  # 416: nothing left to send, the part is complete
            raise SourceError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        kept = f"{part.stat().st_size} bytes kept in {part}, " if part.exists() else ""
        raise SourceError(f"download of {url} failed or stalled ({getattr(e, 'reason', e)}); {kept}run the command "
                          f"again to resume") from None
    got = sha256_file(part)
    if got != sha256:
        part.unlink()
        raise SourceError(f"checksum mismatch for {url}: expected {sha256}, got {got}; the download was removed")
    os.replace(part, dest)
    return dest


def download_librispeech(subset: str, root: str | os.PathLike, url: str | None = None,
                         sha256: str | None = None) -> Path:
    """Download one LibriSpeech subset, verify its SHA-256, extract it under ``root``; return the tree.

    Needs internet (not available where the book is tested: the tests call it with a local archive). The download
    resumes after an interruption and gives up on a stalled connection (:func:`download`); a checksum mismatch
    deletes it and raises, so a truncated archive is never extracted.
    """
    root = Path(root)
    expected = sha256 or LIBRISPEECH_SHA256.get(subset)
    if expected is None:
        raise ValueError(f"no known checksum for LibriSpeech subset {subset!r}; pass sha256=")
    tree = root / "LibriSpeech" / subset
    if tree.is_dir():
        return root / "LibriSpeech"
    archive = root / f"{subset}.tar.gz"
    if archive.exists() and sha256_file(archive) != expected:
        archive.unlink()
        raise SourceError(f"checksum mismatch for {archive}: expected {expected}; the file was removed, run again")
    if not archive.exists():
        download(url or LIBRISPEECH_URL.format(subset=subset), archive, expected)
    staging = root / f".{subset}.extracting"
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    (root / "LibriSpeech").mkdir(parents=True, exist_ok=True)
    os.replace(staging / "LibriSpeech" / subset, tree)  # extraction becomes visible only when complete
    _rmtree(staging)
    return root / "LibriSpeech"


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
