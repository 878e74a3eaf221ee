"""The built-in offline speech source: hundreds of synthetic speakers from libespeak-ng (chapter 1).

An identity is a fixed (language voice, variant, pitch, pitch range, rate, word gap); each speaker reads random
sentences with it. espeak-ng's output depends on what its process synthesised before, so every block of speakers is
synthesised by a freshly loaded library (:meth:`data_prep.espeak.Espeak.fresh`) and every utterance seeds the
library's noise generator (the breathy voices draw noise): the corpus, whose content hash ``dataset.json`` records,
is then the same on every machine with the same espeak-ng wheel. The corpus is cached under
``$ERSAM_CACHE/tts/<config hash>/`` (default ``~/.cache/ersam``) so that several runs reuse it; it is synthesised
in blocks of speakers, each block written atomically, so an interrupted synthesis resumes where it stopped;
``corpus.json`` is written last and marks the corpus complete.

The cache is shared by every run on the machine: synthesis holds a lock (``.<config hash>.lock`` beside the
corpus), so a second process that asks for the same corpus waits and then reuses it. A corpus is used only when its
files are intact (the audio's recorded ``audio_sha256`` is checked); a damaged one is synthesised again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import shutil
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import resample_poly

from ersam_lib.core.io import ArtifactError, atomic_path, atomic_write_json, file_lock, load_array, read_json
from ersam_lib.core.progress import progress
from ersam_lib.core.repro import derived_seed

from ..config import TtsConfig
from ..espeak import Espeak
from ..vad import vad_frames
from ..words import make_sentence
from .base import SourceError, SpeechSource

# Latin-script voices: they read the English word list with their own phonetics, which varies timbre and prosody.
LANGUAGES: tuple[str, ...] = (
    "en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc",
    "de", "fr", "es", "it", "nl", "pt", "pt-BR", "sv", "da", "nb", "pl", "cs", "ro", "fi", "id", "sw", "af", "hr")
# Speech-like voice variants shipped with espeak-ng (robotic, whispering and croaking ones are left out).
VARIANTS: tuple[str, ...] = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "klatt", "klatt2", "klatt3", "Alex",
    "Annie", "Andy", "adam", "anika", "aunty", "benjamin", "boris", "david", "ed", "edward", "gustave", "ian",
    "john", "linda", "max", "michel", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "steph",
    "travis", "grandma", "grandpa")
BLOCK = 16  # speakers per resumable block
CORPUS_FILES: tuple[str, ...] = ("corpus.json", "audio.npy", "vad.npy", "index.parquet")


def cache_root() -> Path:
    """``$ERSAM_CACHE`` or ``~/.cache/ersam``: corpora shared by all runs."""
    return Path(os.environ.get("ERSAM_CACHE", Path.home() / ".cache" / "ersam"))


def make_identities(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` distinct speaker identities drawn deterministically from ``seed``."""
    rng = np.random.default_rng([seed, 1])
    seen: set[tuple] = set()
    out: list[dict[str, Any]] = []
    while len(out) < n:
        ident = {"language": LANGUAGES[rng.integers(len(LANGUAGES))], "variant": VARIANTS[rng.integers(len(VARIANTS))],
                 "pitch": int(rng.integers(15, 86)), "range": int(rng.integers(10, 91)),
                 "rate": int(rng.integers(135, 221)), "wordgap": int(rng.integers(0, 4))}
        key = (ident["language"], ident["variant"], ident["pitch"] // 5, ident["rate"] // 10)
        if key in seen:  # identities must differ audibly, not by one pitch step
            continue
        seen.add(key)
        out.append({"speaker": f"tts{len(out):04d}"} | ident)
    return out


def _synth_block(block: list[dict[str, Any]], cfg: TtsConfig, out: Path) -> Path:
    """Synthesise the utterances of a block of speakers into one ``.npz`` (written atomically), from a freshly loaded
    espeak-ng: the block's samples do not depend on what the worker synthesised before."""
    with Espeak.fresh() as eng:
        audio, vads, rows = _synth_speakers(eng, block, cfg)
    with atomic_path(out) as tmp:
        np.savez(tmp, audio=np.concatenate(audio), vad=np.concatenate(vads),
                 utt_id=np.array([r[0] for r in rows]), speaker=np.array([r[1] for r in rows]),
                 n_samples=np.array([r[2] for r in rows]), n_frames=np.array([r[3] for r in rows]),
                 text=np.array([r[4] for r in rows]))
    return out


def _synth_speakers(eng: Espeak, block: list[dict[str, Any]], cfg: TtsConfig) -> tuple[list, list, list]:
    """Each speaker's sentences with its voice: int16 audio, VAD tracks and index rows, in block order."""
    audio, vads, rows = [], [], []
    for ident in block:
        voice = ident["language"] + (f"+{ident['variant']}" if ident["variant"] else "")
        eng.set_voice(voice)
        eng.set_params(rate=ident["rate"], pitch=ident["pitch"], range=ident["range"], wordgap=ident["wordgap"])
        index = int(ident["speaker"][3:])
        rng = np.random.default_rng([cfg.seed, 2, index])
        for u in range(cfg.utts_per_speaker):
            text = make_sentence(rng, cfg.min_words, cfg.max_words)
            eng.seed(derived_seed(cfg.seed, 3, index, u))
            wav = resample_poly(eng.synth(text).astype(np.float32) / 32768.0, 320, 441)  # 22.05 -> 16 kHz
            wav = (wav / max(np.abs(wav).max(), 1e-4) * 0.9).astype(np.float32)
            audio.append((wav * 32767).astype(np.int16))
            vads.append(vad_frames(wav, mode=2))
            rows.append((f"{ident['speaker']}-{u:02d}", ident["speaker"], len(wav), len(vads[-1]), text))
    return audio, vads, rows


def synthesize_corpus(cfg: TtsConfig, root: Path | None = None, workers: int = 2) -> Path:
    """Make sure the TTS corpus for ``cfg`` exists in the cache and return its folder (chapter 1).

    Resumable: finished blocks are kept; ``corpus.json`` marks completion and records the synthesis speed. Holds
    the corpus lock throughout, so concurrent callers synthesise it once; a damaged corpus is synthesised again.
    """
    folder = (root or cache_root()) / "tts" / cfg.key()
    with file_lock(folder.parent / f".{cfg.key()}.lock"):
        problem = corpus_problem(folder)
        if problem is None:
            return folder
        if (folder / "corpus.json").exists():  # it was complete once: remove the damaged corpus, keep nothing
            warnings.warn(f"{problem}; synthesising the corpus again", stacklevel=2)
            for name in CORPUS_FILES:
                (folder / name).unlink(missing_ok=True)
        _synthesize(cfg, folder, workers)
    return folder


def _synthesize(cfg: TtsConfig, folder: Path, workers: int) -> None:
    parts = folder / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    idents = make_identities(cfg.n_speakers, cfg.seed)
    blocks = [idents[i:i + BLOCK] for i in range(0, len(idents), BLOCK)]
    todo = [(b, parts / f"block_{i:04d}.npz") for i, b in enumerate(blocks) if not (parts / f"block_{i:04d}.npz").exists()]
    t0 = time.perf_counter()
    bar = progress(total=len(blocks), initial=len(blocks) - len(todo), desc="synthesising speakers (blocks)")
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            for _ in pool.map(_synth_block, [b for b, _ in todo], [cfg] * len(todo), [p for _, p in todo]):
                bar.update()
    else:
        for b, p in todo:
            _synth_block(b, cfg, p)
            bar.update()
    bar.close()
    synth_s = time.perf_counter() - t0
    _consolidate(folder, [parts / f"block_{i:04d}.npz" for i in range(len(blocks))], idents, cfg, synth_s, len(todo))
    shutil.rmtree(parts, ignore_errors=True)


def corpus_problem(folder: Path) -> str | None:
    """Why the corpus in ``folder`` cannot be used (one line naming the file), or ``None`` when it is complete and
    its audio still has the SHA-256 recorded in ``corpus.json``."""
    meta_path = folder / "corpus.json"
    if not meta_path.exists():
        return f"{folder} is not a complete TTS corpus (no corpus.json)"
    try:
        meta = read_json(meta_path)
        for name in CORPUS_FILES[1:]:
            if not (folder / name).exists():
                return f"{folder / name} is missing"
        if _array_sha256(folder / "audio.npy") != meta["audio_sha256"]:
            return f"{folder / 'audio.npy'} does not match the audio_sha256 recorded in corpus.json"
        load_array(folder / "vad.npy", mmap_mode="r")
        if len(pd.read_parquet(folder / "index.parquet")) != meta["n_utterances"]:
            return f"{folder / 'index.parquet'} does not list the {meta['n_utterances']} utterances of corpus.json"
    except ArtifactError as e:
        return str(e)
    except Exception as e:  # a damaged Parquet file or a corpus.json without its fields
        return f"{folder} holds a damaged corpus ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
    return None


def _array_sha256(path: Path) -> str:
    """SHA-256 of the array's bytes (what ``corpus.json`` records), remembered per file version."""
    st = path.stat()
    return _array_digest(str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=8)
def _array_digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    flat = load_array(path, mmap_mode="r").reshape(-1)
    h = hashlib.sha256()
    for i in range(0, len(flat), 1 << 24):  # in chunks: the tutorial corpus is hundreds of MB
        h.update(np.ascontiguousarray(flat[i:i + (1 << 24)]).tobytes())
    return h.hexdigest()


def _consolidate(folder: Path, files: list[Path], idents: list[dict], cfg: TtsConfig, synth_s: float,
                 n_synth_blocks: int) -> None:
    loaded = [dict(np.load(f)) for f in files]
    audio = np.concatenate([d["audio"] for d in loaded])
    vad = np.concatenate([d["vad"] for d in loaded])
    index = pd.DataFrame({k: np.concatenate([d[k] for d in loaded]) for k in
                          ("utt_id", "speaker", "n_samples", "n_frames", "text")})
    index["start"] = np.concatenate([[0], np.cumsum(index["n_samples"].to_numpy())[:-1]]).astype(np.int64)
    index["vad_start"] = np.concatenate([[0], np.cumsum(index["n_frames"].to_numpy())[:-1]]).astype(np.int64)
    with atomic_path(folder / "audio.npy") as tmp:
        np.save(tmp, audio)
    with atomic_path(folder / "vad.npy") as tmp:
        np.save(tmp, vad)
    with atomic_path(folder / "index.parquet") as tmp:
        index.to_parquet(tmp, index=False)
    seconds = float(len(audio) / 16_000)
    digest = hashlib.sha256(audio.tobytes()).hexdigest()
    atomic_write_json(folder / "corpus.json", {
        "config": dataclasses.asdict(cfg), "speakers": idents, "n_utterances": len(index), "seconds": seconds,
        "audio_sha256": digest,
        # Real-time factor only when this call synthesised every block (a resumed build would overstate it).
        "synth_wall_s": synth_s if n_synth_blocks == len(files) else None,
        "x_real_time": seconds / synth_s if n_synth_blocks == len(files) and synth_s > 0 else None})


class TtsSource(SpeechSource):
    """Speech source over a synthesised corpus folder (see :func:`synthesize_corpus`); audio is memory-mapped."""

    name = "tts"

    def __init__(self, folder: str | os.PathLike) -> None:
        super().__init__()
        self.folder = Path(folder)
        if not (self.folder / "corpus.json").exists():
            raise SourceError(f"{self.folder} is not a complete TTS corpus (no corpus.json); synthesise it first")
        problem = corpus_problem(self.folder)
        if problem is not None:
            raise ArtifactError(f"{problem}; the next build synthesises it again (python -m data_prep build, or "
                                f"chapter 1)")
        self._index: pd.DataFrame | None = None
        self._audio: np.ndarray | None = None
        self._vad: np.ndarray | None = None

    @classmethod
    def from_config(cls, cfg: TtsConfig, root: Path | None = None, workers: int = 2) -> "TtsSource":
        return cls(synthesize_corpus(cfg, root, workers))

    def _open(self) -> None:
        if self._index is None:
            self._index = pd.read_parquet(self.folder / "index.parquet")
            # Plain dict lookups: rendering asks for tens of thousands of utterances, pandas .loc is too slow.
            cols = zip(self._index["utt_id"], self._index["start"], self._index["n_samples"],
                       self._index["vad_start"], self._index["n_frames"])
            self._where = {u: (int(a), int(n), int(va), int(vn)) for u, a, n, va, vn in cols}
            self._audio = load_array(self.folder / "audio.npy", mmap_mode="r")
            self._vad = load_array(self.folder / "vad.npy", mmap_mode="r")

    def index(self) -> pd.DataFrame:
        self._open()
        return self._index

    def load(self, utt_id: str) -> np.ndarray:
        self._open()
        start, n, _, _ = self._where[utt_id]
        return self._audio[start:start + n].astype(np.float32) / 32767.0

    def fingerprint(self) -> dict[str, Any]:
        """The corpus config and its audio hash (another espeak-ng build gives another corpus)."""
        meta = read_json(self.folder / "corpus.json")
        return {"name": self.name, "config": meta["config"], "audio_sha256": meta["audio_sha256"]}

    def vad(self, utt_id: str, mode: int = 2) -> np.ndarray:
        if mode != 2:  # the corpus stores mode-2 tracks; other modes are computed
            return super().vad(utt_id, mode)
        self._open()
        _, _, start, n = self._where[utt_id]
        return np.asarray(self._vad[start:start + n], bool)

    def describe(self) -> dict[str, Any]:
        meta = read_json(self.folder / "corpus.json")
        return {"name": self.name, "folder": str(self.folder), "config": meta["config"],
                "n_utterances": meta["n_utterances"], "seconds": meta["seconds"],
                "audio_sha256": meta.get("audio_sha256"),
                "synth_wall_s": meta["synth_wall_s"], "x_real_time": meta["x_real_time"]}

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.update(_index=None, _audio=None, _vad=None, _where=None)  # reopened lazily in the worker
        return state
