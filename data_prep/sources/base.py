"""The interface every speech source implements: utterances grouped by speaker, audio at 16 kHz (chapter 1)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import pandas as pd

from ..vad import vad_frames


class SourceError(RuntimeError):
    """A speech source is missing, unreadable or too small for the requested data set."""


class SpeechSource(ABC):
    """Utterances grouped by speaker. ``index()`` has at least the columns ``utt_id`` and ``speaker``.

    Subclasses: :class:`data_prep.sources.tts.TtsSource` (built-in), :class:`~data_prep.sources.files.LibriSpeechSource`
    and :class:`~data_prep.sources.files.FolderSource`. ``skipped`` lists files left out as unreadable.
    """

    name: str = "abstract"
    sample_rate: int = 16_000

    def __init__(self) -> None:
        self.skipped: list[dict[str, str]] = []
        self._vad_memo: dict[tuple[str, int], np.ndarray] = {}

    @abstractmethod
    def index(self) -> pd.DataFrame:
        """One row per utterance: ``utt_id``, ``speaker`` (plus source-specific columns)."""

    @abstractmethod
    def load(self, utt_id: str) -> np.ndarray:
        """Mono float32 audio of one utterance at 16 kHz."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON description, enough to reopen the source (:func:`data_prep.sources.open_source`)."""

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the audio this source serves: the manifest and the features built from it record it,
        and are reused only while it matches (chapter 1)."""
        return self.describe()

    def skip(self, utt_ids: list[str], error: str, record: bool = True) -> list[str]:
        """The files of ``utt_ids`` (their ids where the index has no paths), recorded in ``skipped`` as left out
        with ``error`` unless ``record`` is false (chapter 1 names what it leaves out)."""
        index = self.index()
        where = dict(zip(index["utt_id"], index["path"])) if "path" in index else {}
        files = [str(where.get(u, u)) for u in utt_ids]
        if record:
            self.skipped.extend({"path": f, "error": error} for f in files)
        return files

    def vad(self, utt_id: str, mode: int = 2) -> np.ndarray:
        """Per-10-ms speech activity of an utterance (memoised: the sampler asks for each utterance many times)."""
        key = (utt_id, mode)
        if key not in self._vad_memo:
            self._vad_memo[key] = vad_frames(self.load(utt_id), mode)
        return self._vad_memo[key]

    def speakers(self) -> dict[str, list[str]]:
        """Speaker -> sorted utterance ids."""
        idx = self.index()
        return {str(s): sorted(map(str, g["utt_id"])) for s, g in idx.groupby("speaker", sort=True)}

    def __getstate__(self) -> dict:
        # Worker processes get the source without the VAD memo (it can be large and is rebuilt cheaply).
        state = self.__dict__.copy()
        state["_vad_memo"] = {}
        return state
