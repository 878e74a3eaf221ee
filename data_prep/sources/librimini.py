"""The real read speech the repository carries: ``data/librispeech-mini`` (LibriSpeech, CC BY 4.0; chapter 1).

Layout (see the folder's README for attribution and provenance)::

    train-clean-100/SPK-CHAPTER-UTT.flac      251 speakers, one utterance each (1.6-17 s)
    test-other/SPK/SPK-CHAPTER-UTT.flac       10 speakers, ten utterances each (harder recording conditions)
    SHA256SUMS                                every FLAC file's SHA-256, as ``sha256sum`` writes it

The folder is found without configuration, relative to the repository root; ``root=`` or the environment variable
``ERSAM_LIBRIMINI`` point elsewhere. Opening the source checks every file against ``SHA256SUMS`` (a fraction of a
second for the 71 MB): a missing, corrupt or unlisted file is a :class:`SourceError` naming it, or with
``on_error="skip"`` it is left out and named in ``skipped`` (which ``dataset.json`` records).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .base import SourceError
from .files import FileSource, sha256_file

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = REPO_ROOT / "data" / "librispeech-mini"
ENV_VAR = "ERSAM_LIBRIMINI"
SUBSETS: tuple[str, ...] = ("train-clean-100", "test-other")
CHECKSUMS = "SHA256SUMS"


def default_root() -> Path:
    """``$ERSAM_LIBRIMINI`` if set, else the copy the repository carries (``data/librispeech-mini``)."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_ROOT)


def read_checksums(root: str | os.PathLike) -> dict[str, str]:
    """``SHA256SUMS`` of a librispeech-mini folder as {relative path: sha256} (empty if the file is absent)."""
    path = Path(root) / CHECKSUMS
    if not path.exists():
        return {}
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            digest, _, rel = line.partition("  ")
            if len(digest) != 64 or not rel:
                raise SourceError(f"{path}, line {n}: expected '<sha256>  <relative path>', got {line[:80]!r}")
            out[rel.strip()] = digest
    return out


class LibriMiniSource(FileSource):
    """The repository's real speech (see the module docstring); ``index()`` adds the column ``subset``.

    Chapter 1 builds the real evaluation splits from it (``real_val`` and ``real_test`` from train-clean-100
    speakers no training mixture uses, ``real_test_other`` from test-other) and, on request, real training speech.
    ``verify=False`` skips the checksums (a copy without ``SHA256SUMS`` is read without them anyway).
    """

    name = "librimini"

    def __init__(self, root: str | os.PathLike | None = None, on_error: str = "skip", verify: bool = True) -> None:
        self.verify = verify
        root = Path(root) if root is not None else default_root()
        if not root.is_dir():
            raise SourceError(f"librispeech-mini folder {root} does not exist: the repository carries it in "
                              f"data/librispeech-mini; set {ENV_VAR} or the root to another copy")
        self.checksums = read_checksums(root) if verify else {}
        super().__init__(root, on_error)
        self._table["subset"] = [Path(p).relative_to(self.root).parts[0] for p in self._table["path"]]

    def _reject(self, path: Path, why: str) -> None:
        if self.on_error == "raise":
            raise SourceError(f"librispeech-mini file {path}: {why}")
        self.skipped.append({"path": str(path), "error": why})

    def _entries(self) -> list[tuple[str, str, Path]]:
        found = []
        for subset in SUBSETS:
            folder = self.root / subset
            if not folder.is_dir():
                raise SourceError(f"{folder} is missing: librispeech-mini needs {' and '.join(SUBSETS)} "
                                  f"under {self.root}")
            found += sorted(folder.glob("*.flac" if subset == "train-clean-100" else "*/*.flac"))
        if self.checksums:
            found = self._verified(found)
        # the speaker is the file name's first field in both layouts (SPK-CHAPTER-UTT)
        return [(p.stem, p.stem.split("-")[0], p) for p in found]

    def _verified(self, paths: list[Path]) -> list[Path]:
        """The files whose SHA-256 matches ``SHA256SUMS``; every other listed or found file is rejected."""
        present = {p.relative_to(self.root).as_posix(): p for p in paths}
        for rel in sorted(set(self.checksums) - set(present)):
            self._reject(self.root / rel, f"listed in {CHECKSUMS} but missing")
        keep = []
        for rel, path in present.items():
            if rel not in self.checksums:
                self._reject(path, f"not listed in {CHECKSUMS} (unverified file)")
            elif sha256_file(path) != self.checksums[rel]:
                self._reject(path, f"SHA-256 differs from {CHECKSUMS}: the file is corrupt or modified")
            else:
                keep.append(path)
        return keep

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"subsets": list(SUBSETS), "checksums_verified": bool(self.checksums)}
