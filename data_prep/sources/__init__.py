"""Speech sources behind one interface (chapter 1): ``tts`` (built-in), ``librispeech``, ``folder``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import DataConfig
from .base import SourceError, SpeechSource
from .files import FolderSource, LibriSpeechSource, download_librispeech, read_audio
from .tts import TtsSource, cache_root, synthesize_corpus

__all__ = ["SourceError", "SpeechSource", "FolderSource", "LibriSpeechSource", "TtsSource", "open_source",
           "reopen_source", "download_librispeech", "read_audio", "cache_root", "synthesize_corpus"]


def open_source(cfg: DataConfig) -> SpeechSource:
    """The speech source a :class:`DataConfig` names (the TTS corpus is synthesised on first use)."""
    if cfg.source == "tts":
        return TtsSource.from_config(cfg.tts, workers=cfg.workers)
    if cfg.root is None:
        raise SourceError(f"source {cfg.source!r} needs a root folder (--root)")
    if not Path(cfg.root).is_dir():
        raise SourceError(f"speech source root {cfg.root} does not exist or is not a directory")
    if cfg.source == "librispeech":
        subsets = sorted({s for v in cfg.subset_splits.values() for s in v}) if cfg.subset_splits else None
        return LibriSpeechSource(cfg.root, on_error=cfg.on_error, subsets=subsets)
    if cfg.source == "folder":
        return FolderSource(cfg.root, on_error=cfg.on_error)
    raise SourceError(f"unknown source {cfg.source!r}")


def reopen_source(desc: dict[str, Any], cfg: DataConfig) -> SpeechSource:
    """Reopen the source recorded in ``dataset.json`` (chapters 3 and 6 render waveforms from the manifest)."""
    if desc["name"] == "tts":
        folder = Path(desc["folder"])
        return TtsSource(folder) if (folder / "corpus.json").exists() else open_source(cfg)
    return open_source(cfg)
