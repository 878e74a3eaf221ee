"""Several speech sources behind one interface, for one manifest (chapter 1: synthetic + real speech).

Ids are namespaced ``<source>:<id>`` (``tts:tts0042``, ``librimini:1688``), so that speakers of two sources never
collide and every utterance of a recipe says where it comes from; :func:`data_prep.render.render_mixture` renders
from a :class:`SourceSet` as from any source.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .base import SourceError, SpeechSource

SEP = ":"


def namespaced(source: str, ids: list[str]) -> list[str]:
    """``ids`` of ``source`` as a :class:`SourceSet` names them."""
    return [f"{source}{SEP}{i}" for i in ids]


def source_of(uid: str) -> str:
    """The source name of a namespaced id."""
    return uid.partition(SEP)[0]


class SourceSet(SpeechSource):
    """Named member sources; ``index()`` has ``utt_id``, ``speaker`` (both namespaced) and ``source``."""

    name = "set"

    def __init__(self, members: dict[str, SpeechSource]) -> None:
        super().__init__()
        if not members:
            raise SourceError("a SourceSet needs at least one source")
        bad = [n for n in members if SEP in n]
        if bad:
            raise SourceError(f"source names must not contain {SEP!r}: {bad}")
        self.members = dict(members)
        self._index: pd.DataFrame | None = None

    def member(self, name: str) -> SpeechSource:
        if name not in self.members:
            raise SourceError(f"no source {name!r} in this set (sources: {', '.join(self.members)})")
        return self.members[name]

    def index(self) -> pd.DataFrame:
        if self._index is None:
            frames = []
            for name, src in self.members.items():
                idx = src.index()
                frames.append(pd.DataFrame({"utt_id": namespaced(name, idx["utt_id"].astype(str).tolist()),
                                            "speaker": namespaced(name, idx["speaker"].astype(str).tolist()),
                                            "source": name}))
            self._index = pd.concat(frames, ignore_index=True)
        return self._index

    def _split(self, uid: str) -> tuple[SpeechSource, str]:
        name, sep, bare = uid.partition(SEP)
        if not sep:
            raise SourceError(f"utterance id {uid!r} is not namespaced (<source>{SEP}<id>)")
        return self.member(name), bare

    def load(self, utt_id: str) -> np.ndarray:
        src, bare = self._split(utt_id)
        return src.load(bare)

    def skip(self, utt_ids: list[str], error: str, record: bool = True) -> list[str]:
        files = []
        for uid in utt_ids:  # recorded by the member that owns the file, so its description lists it
            src, bare = self._split(uid)
            files += src.skip([bare], error, record)
        return files

    def vad(self, utt_id: str, mode: int = 2) -> np.ndarray:
        src, bare = self._split(utt_id)
        return src.vad(bare, mode)  # the member memoises (or, for TTS, stores) its tracks

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "members": {n: s.describe() for n, s in self.members.items()}}

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name, "members": {n: s.fingerprint() for n, s in self.members.items()}}

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_index"] = None
        return state
