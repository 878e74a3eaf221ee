"""Speech sources behind one interface (chapter 1): ``tts`` (built-in), ``librispeech``, ``folder`` and
``librimini`` (the real speech the repository carries); a :class:`SourceSet` puts several into one manifest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..config import LIBRICOUNT_SUBSETS, DataConfig
from .base import SourceError, SpeechSource
from .files import FolderSource, LibriSpeechSource, download_librispeech, read_audio
from .librimini import LibriMiniSource
from .sourceset import SourceSet
from .tts import TtsSource, cache_root, synthesize_corpus

__all__ = ["SourceError", "SpeechSource", "FolderSource", "LibriMiniSource", "LibriSpeechSource", "SourceSet",
           "TtsSource", "as_source_set", "download_librispeech", "librispeech_root", "open_source", "open_sources",
           "reopen_source", "reopen_sources", "read_audio", "cache_root", "synthesize_corpus"]

LIBRISPEECH_ENV = "ERSAM_LIBRISPEECH"


def librispeech_root(root: str | None, subsets: dict[str, list[str]] | None = None) -> str:
    """The LibriSpeech root: ``root``, else ``$ERSAM_LIBRISPEECH``; a missing one is a one-line error naming the
    download command (the paper scale's first check)."""
    root = root or os.environ.get(LIBRISPEECH_ENV)
    if root and Path(root).is_dir():
        return root
    wanted = sorted({s for v in (subsets or LIBRICOUNT_SUBSETS).values() for s in v})
    fetch = "python -m data_prep download --root DIR " + " ".join(f"--subset {s}" for s in wanted)
    where = f"LibriSpeech root {Path(root).resolve()} does not exist" if root else \
        f"source 'librispeech' needs a root: set ROOT (-p ROOT DIR) or ${LIBRISPEECH_ENV}"
    raise SourceError(f"{where}; download it with `{fetch}` (needs internet), then use DIR")


def _open(name: str, root: str | None, cfg: DataConfig) -> SpeechSource:
    if name == "tts":
        return TtsSource.from_config(cfg.tts, workers=cfg.workers)
    if name == "librimini":
        return LibriMiniSource(root, on_error=cfg.on_error)
    if name == "librispeech":
        subsets = sorted({s for v in cfg.subset_splits.values() for s in v}) if cfg.subset_splits else None
        return LibriSpeechSource(librispeech_root(root, cfg.subset_splits), on_error=cfg.on_error, subsets=subsets)
    if name == "folder":
        if root is None:
            raise SourceError("source 'folder' needs a root folder (--root)")
        return FolderSource(root, on_error=cfg.on_error)
    raise SourceError(f"unknown source {name!r}")


def open_source(cfg: DataConfig) -> SpeechSource:
    """The primary speech source a :class:`DataConfig` names (the TTS corpus is synthesised on first use)."""
    return _open(cfg.source, cfg.root, cfg)


def open_sources(cfg: DataConfig) -> SourceSet:
    """Every source a build reads: the primary source and, unless ``real_source`` is None, the real one."""
    members = {cfg.source: open_source(cfg)}
    if cfg.real_source:
        members[cfg.real_source] = _open(cfg.real_source, cfg.real_root, cfg)
    return SourceSet(members)


def as_source_set(cfg: DataConfig, source: SpeechSource) -> SourceSet:
    """``source`` if it is a :class:`SourceSet`, else a set with it as the primary source (and the real one)."""
    if isinstance(source, SourceSet):
        return source
    members = {cfg.source: source}
    if cfg.real_source:
        members[cfg.real_source] = _open(cfg.real_source, cfg.real_root, cfg)
    return SourceSet(members)


def reopen_source(desc: dict[str, Any], cfg: DataConfig) -> SpeechSource:
    """Reopen the source recorded in ``dataset.json`` (chapters 3 and 6 render waveforms from the manifest)."""
    if desc["name"] == "tts":
        folder = Path(desc["folder"])
        return TtsSource(folder) if (folder / "corpus.json").exists() else open_source(cfg)
    if desc["name"] in ("librispeech", "folder") and cfg.root is None and desc.get("root"):
        return _open(desc["name"], desc["root"], cfg)  # the root the build found (e.g. in $ERSAM_LIBRISPEECH)
    return open_source(cfg)


def reopen_sources(descs: dict[str, dict[str, Any]], cfg: DataConfig) -> SourceSet:
    """Reopen the :class:`SourceSet` a build recorded (``dataset.json``'s ``sources``: name -> description)."""
    members = {}
    for name, desc in descs.items():
        if name == cfg.source:
            members[name] = reopen_source(desc, cfg)
        else:
            members[name] = _open(name, cfg.real_root if name == cfg.real_source else None, cfg)
    return SourceSet(members)
