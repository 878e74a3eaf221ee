"""The streaming social-ambiance meter of chapter 6: 5-s windows over a recording of any length -> counts and levels.

``count(audio, counter)`` decodes a recording (wav/flac/ogg through soundfile, a path, ``"-"`` for standard input,
a binary file object or an array) block by block, averages its channels, resamples it to the model's rate, slides
a window of ``counter.window_s`` every ``hop_s`` seconds, brings each window to the training level
(:func:`data_prep.normalize.peak_normalize`), asks the model for class probabilities and returns one row per window:
``start_s, end_s, count, level, p_<class>...``. ``df.attrs`` holds the timings and the real-time factor.

Windows: window i covers ``[i * hop, i * hop + window)``. When the grid does not end exactly at the end of the
recording, ``tail="align"`` (the default) adds one last full window that *ends* at the end of the recording, so every
sample is heard and every window holds real audio (its start is off the grid); ``tail="drop"`` leaves the remainder
out (what the RTTM evaluation uses, so that windows match :func:`data_prep.rttm.window_counts`). A recording
shorter than one window is an error.

Ambiance levels: none / low / moderate / active, from the count by thresholds (default 1, 2, 4: the bins of
:data:`data_prep.labels.LEVELS`). A model trained on the ``levels`` class set predicts levels directly; its count
column is empty.

Models: anything that follows the small :class:`WindowCounter` protocol; :class:`TorchWindowCounter` wraps a torch
module that maps ``(B, samples)`` waveforms to logits. :func:`save_counter` / :func:`load_counter` store such a
module as a ``torch.export`` program (``.pt2``) with its model card beside it (:class:`ersam_lib.cards.ModelCard`);
:func:`load_counter` also runs the programs chapter 6 deploys (:mod:`ersam_lib.deploy`): an ExecuTorch ``.pte``
(:class:`ExecuTorchWindowCounter`) or an ONNX file (:class:`OnnxWindowCounter`), each with its card. A card names
its file and records its SHA-256 (:func:`read_card` checks both before any runtime reads the file), and a ``.pt2`` is read only when none of its pickles holds more than tensors (a model file
never runs code). Chapter 6's programs bring each window to the training level themselves (``normalizes`` in the
card); the meter then refuses ``normalize=False`` rather than pretend to honour it.
Bad input raises :class:`MeterError` with a one-line message that names the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import resample_poly

from data_prep.labels import DEFAULT_THRESHOLDS, LEVELS, level_of
from data_prep.normalize import peak_normalize

from .cards import FORMATS, CardError, ModelCard, card_path, claim
from .io import atomic_path, atomic_write_json

__all__ = [
    "AudioInfo", "DEFAULT_THRESHOLDS", "ExecuTorchWindowCounter", "LEVEL_NAMES", "MeterConfig", "MeterError",
    "OnnxWindowCounter", "PROGRAM_FORMATS", "TorchWindowCounter", "WindowCounter", "audio_blocks", "check_thresholds",
    "class_kind", "count", "format_windows", "iter_windows", "level_index", "levels_of", "load_counter",
    "output_format", "plot_format", "plot_timeline", "read_card", "save_counter", "summary_line", "to_json",
    "write_windows",
]

SAMPLE_RATE = 16_000
WINDOW_S = 5.0
TAILS: tuple[str, ...] = ("align", "drop")
LEVEL_NAMES: tuple[str, ...] = tuple(name for name, _, _ in LEVELS)
# The model files the meter runs: programs that take raw audio (a state dict needs its architecture and front end).
PROGRAM_FORMATS: dict[str, str] = {k: v for k, v in FORMATS.items() if v != "state_dict"}


class MeterError(ValueError):
    """Bad input to the meter (audio, model, options); the message is one line and names the file."""


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


# --------------------------------------------------------------------------------------------- models
@runtime_checkable
class WindowCounter(Protocol):
    """What the meter needs from a model: class names (``"0".."K"`` or the four level names), the rate and window
    length it expects, and ``predict_proba(windows (N, samples) float32) -> (N, len(classes))``. A counter with a
    true ``normalizes`` attribute brings each window to the training level itself (chapter 6's programs)."""

    classes: list[str]
    sample_rate: int
    window_s: float

    def predict_proba(self, windows: np.ndarray) -> np.ndarray: ...


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class _ProgramCounter:
    """What the deployed programs share: class names, rate, window, and a batch-by-batch loop over a runner."""

    def __init__(self, classes: Sequence[str], sample_rate: int, window_s: float, batch_size: int,
                 normalizes: bool = False, name: str = "the program") -> None:
        self.classes = [str(c) for c in classes]
        self.sample_rate, self.window_s, self.batch_size = int(sample_rate), float(window_s), int(batch_size)
        self.normalizes, self.name = bool(normalizes), str(name)
        class_kind(self.classes)

    @property
    def n_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_samples:
            raise MeterError(f"expected windows (N, {self.n_samples}), got shape {x.shape}")
        try:
            out = [_softmax(self._logits(x[i:i + self.batch_size])) for i in range(0, len(x), self.batch_size)]
        except Exception as e:  # noqa: BLE001 - a program that does not take what its card promises
            raise MeterError(f"{self.name} failed on a batch of ({min(len(x), self.batch_size)}, {self.n_samples}) "
                             f"windows, the input its card describes: {_first_line(e)[:200]}") from None
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))


class ExecuTorchWindowCounter(_ProgramCounter):
    """A :class:`WindowCounter` over an ExecuTorch program (``.pte``, chapter 6) that maps a fixed batch of
    ``(batch_size, samples)`` waveforms to logits; XNNPACK runs on ``threads`` threads (default 1)."""

    def __init__(self, program: str | os.PathLike | bytes, classes: Sequence[str], sample_rate: int = SAMPLE_RATE,
                 window_s: float = WINDOW_S, batch_size: int = 1, threads: int = 1, normalizes: bool = False) -> None:
        from .export import load_executorch

        name = "the program" if isinstance(program, bytes) else f"model file {program}"
        super().__init__(classes, sample_rate, window_s, batch_size, normalizes, name)
        self._program, self._method = load_executorch(program, threads)

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        import torch

        n = len(batch)
        if n < self.batch_size:  # the program has a fixed batch: pad the last one
            batch = np.concatenate([batch, np.zeros((self.batch_size - n, batch.shape[1]), np.float32)])
        return self._method.execute((torch.from_numpy(batch),))[0].numpy()[:n]


class OnnxWindowCounter(_ProgramCounter):
    """A :class:`WindowCounter` over an ONNX program (ONNX Runtime, ``threads`` intra-op threads; chapter 6)."""

    def __init__(self, path: str | os.PathLike, classes: Sequence[str], sample_rate: int = SAMPLE_RATE,
                 window_s: float = WINDOW_S, batch_size: int = 1, threads: int = 1, normalizes: bool = False) -> None:
        import onnxruntime as ort

        super().__init__(classes, sample_rate, window_s, batch_size, normalizes, f"model file {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inputs = self._session.get_inputs()
        want = [self.batch_size, self.n_samples]
        shape = inputs[0].shape if len(inputs) == 1 else None
        if shape is None or len(shape) != 2 or any(isinstance(d, int) and d != w for d, w in zip(shape, want)):
            raise MeterError(f"model file {path} takes {[(i.name, i.shape) for i in inputs]}, not the one "
                             f"({self.batch_size}, {self.n_samples}) waveform batch its card describes")
        self._input = inputs[0].name

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        if n < self.batch_size:
            batch = np.concatenate([batch, np.zeros((self.batch_size - n, batch.shape[1]), np.float32)])
        return self._session.run(None, {self._input: batch})[0][:n]


class TorchWindowCounter:
    """A :class:`WindowCounter` over any torch module that maps ``(B, samples)`` waveforms to logits (chapter 6)."""

    def __init__(self, model: Any, classes: Sequence[str], sample_rate: int = SAMPLE_RATE,
                 window_s: float = WINDOW_S, batch_size: int = 32, normalizes: bool = False) -> None:
        self.model = model
        self.normalizes = bool(normalizes)
        self.classes = [str(c) for c in classes]
        self.sample_rate = int(sample_rate)
        self.window_s = float(window_s)
        self.batch_size = int(batch_size)
        class_kind(self.classes)
        with contextlib.suppress(NotImplementedError):  # torch.export programs are frozen in eval mode already
            model.eval()

    @property
    def n_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        import torch

        x = np.ascontiguousarray(windows, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_samples:
            raise MeterError(f"expected windows (N, {self.n_samples}), got shape {x.shape}")
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), self.batch_size):
                logits = self.model(torch.from_numpy(x[i:i + self.batch_size]))
                out.append(torch.softmax(logits.float(), dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)


def class_kind(classes: Sequence[str]) -> str:
    """``"counts"`` for classes ``"0".."K"``, ``"levels"`` for the four level names; anything else is an error."""
    classes = [str(c) for c in classes]
    if len(classes) >= 2 and classes == [str(k) for k in range(len(classes))]:
        return "counts"
    if classes == list(LEVEL_NAMES):
        return "levels"
    raise MeterError(f"model classes must be '0'..'K' or {list(LEVEL_NAMES)}, got {classes}")


def save_counter(model: Any, classes: Sequence[str], path: str | os.PathLike, sample_rate: int = SAMPLE_RATE,
                 window_s: float = WINDOW_S, **card: Any) -> Path:
    """Export ``model`` (``(B, samples)`` -> logits) with ``torch.export`` to ``path`` (``.pt2``, dynamic batch)
    and write its :class:`~ersam_lib.cards.ModelCard`; :func:`load_counter` reads both back. ``card``: further
    fields of the card (``name``, ``architecture``, ``metrics``, ...)."""
    import torch

    path = Path(path)
    if path.suffix != ".pt2":
        raise MeterError(f"a counter bundle is a .pt2 file, got {path}")
    class_kind(classes)
    model.eval()
    n_samples = int(round(window_s * sample_rate))
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (torch.zeros(2, n_samples),), dynamic_shapes=({0: batch},))
    claim(path)
    with atomic_path(path) as tmp:
        torch.export.save(program, tmp)
    audio = {"kind": "audio", "shape": [None, n_samples], "dtype": "float32"}  # any batch
    ModelCard.describe(path, classes=tuple(classes), input=audio, sample_rate=sample_rate, window_s=window_s,
                       **card).save(path.parent)
    return path


def load_counter(path: str | os.PathLike, threads: int = 1) -> WindowCounter:
    """The counter program at ``path`` with its card (:func:`save_counter`'s ``.pt2``, chapter 6's ExecuTorch
    ``.pte`` and ONNX programs, run on ``threads`` threads); :class:`MeterError` for anything else.

    The program must be the one its card describes (name and SHA-256) before any runtime reads it, and a ``.pt2``
    is read only when every pickle inside it holds tensors and plain values (``torch.export.load`` would otherwise
    fall back to unpickling arbitrary objects, which can run code)."""
    path = Path(path)
    if not path.exists():
        raise MeterError(f"model file {path} does not exist")
    if not path.is_file():
        raise MeterError(f"model path {path} is not a file")
    if path.suffix not in PROGRAM_FORMATS:
        raise MeterError(f"{path} is not a counter program of this book: expected a {'/'.join(PROGRAM_FORMATS)} "
                         f"file with its .json card beside it (ersam_lib.meter.save_counter, ersam_lib.deploy)")
    card = read_card(path)
    args = (card.classes, card.sample_rate, card.window_s)
    if card.format == "torch.export":  # runs in this process's torch (its thread count is the caller's to set)
        return TorchWindowCounter(_load_program(path), *args, normalizes=card.normalizes)
    if card.format == "executorch" and path.read_bytes()[4:6] != b"ET":  # the flatbuffer identifier of every .pte
        raise MeterError(f"model file {path} is not an ExecuTorch program (no 'ET' identifier in its header)")
    kind = ExecuTorchWindowCounter if card.format == "executorch" else OnnxWindowCounter
    try:
        return kind(path, *args, batch_size=card.batch, threads=threads, normalizes=card.normalizes)
    except MeterError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure here means the file is not a usable program
        raise MeterError(f"cannot load model file {path} as {card.format}: {_first_line(e)}") from e


def read_card(path: str | os.PathLike) -> ModelCard:
    """The card of the counter program ``path`` (:meth:`ModelCard.load`: of this very file), with a rate, window,
    batch and classes the meter can use. :class:`MeterError` names the file (and, for a program of a run whose
    bytes changed, the command that rebuilds it)."""
    path = Path(path)
    try:
        card = ModelCard.load(path)
    except CardError as e:
        hint = _rebuild_hint(path) if "does not match the SHA-256" in str(e) else ""
        raise MeterError(f"{e}{hint}") from None
    where = f"model card {card_path(path)}"
    rate, window, batch = card.sample_rate, card.window_s, card.batch
    if not (isinstance(rate, int) and not isinstance(rate, bool) and rate > 0):
        raise MeterError(f"{where}: sample_rate must be a whole number of Hz > 0, got {rate!r}")
    if not (isinstance(window, (int, float)) and not isinstance(window, bool) and math.isfinite(window)
            and window * rate >= 1):
        raise MeterError(f"{where}: window_s must be a positive number of seconds, got {window!r}")
    if not (isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1):
        raise MeterError(f"{where}: batch must be a whole number >= 1, got {batch!r}")
    class_kind(card.classes)
    return card


def _rebuild_hint(path: Path) -> str:
    """For a program in a run's ``deploy/`` folder: the command that writes it again (chapter 6)."""
    from .rundir import rebuild_command, summary_path

    run_dir = path.parent.parent
    if path.parent.name == "deploy" and summary_path(run_dir).is_file():
        return f"; rebuild it: {rebuild_command(run_dir, 'deploy')}"
    return "; export it again"


def _load_program(path: Path) -> Any:
    import torch

    if not zipfile.is_zipfile(path):
        raise MeterError(f"model file {path} is not a torch.export program (not a .pt2 archive)")
    _refuse_pickled_objects(path)
    # torch.export.load logs a full traceback before failing on a damaged archive; the one-line error says it.
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return torch.export.load(path).module()
    except Exception as e:  # noqa: BLE001 - any failure here means the file is not a usable program
        raise MeterError(f"cannot load model file {path}: {_first_line(e)}") from e
    finally:
        logger.setLevel(level)


# Members of a .pt2 archive that are plain text (the format's markers) or JSON: never unpickled.
_PT2_TEXT = ("archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id")


def _refuse_pickled_objects(path: Path) -> None:
    """Read every member of a ``.pt2`` archive that ``torch.export.load`` could unpickle with ``weights_only``
    loading; refuse the archive if one holds more than tensors and plain values.

    ``torch.export.load`` unpickles pickled weights and constants with ``weights_only=False``, and its sample inputs
    with a fallback to it, which runs whatever a pickle names. Only the format's text markers, JSON and the raw
    tensor payloads its configs list as not pickled are left unread; anything else must load as weights."""
    import torch

    with zipfile.ZipFile(path) as z:
        members = {m.filename.split("/", 1)[-1]: m for m in z.infolist() if not m.is_dir()}
        raw = set()
        for name, member in members.items():
            if name.endswith("_config.json") and name.startswith("data/"):
                with contextlib.suppress(ValueError, AttributeError, TypeError):
                    config = json.loads(z.read(member)).get("config", {})
                    raw |= {f"{name.rsplit('/', 1)[0]}/{v['path_name']}" for v in config.values()
                            if not v.get("use_pickle", True)}
        for name, member in members.items():
            if name in _PT2_TEXT or name.endswith(".json") or name in raw:
                continue
            try:
                torch.load(io.BytesIO(z.read(member)), map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - whatever it is, it is not tensors and plain values
                raise MeterError(f"model file {path} holds {name}, which is not tensors and plain values; refused "
                                 f"to load it (unpickling it could run code): {_first_line(e)[:160]}") from None


# --------------------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class MeterConfig:
    """How the meter slides over a recording (chapter 6).

    ``hop_s``: seconds between window starts (> 0; below the window length the windows overlap). ``tail``: what
    happens to the end of the recording that the grid leaves over (``align`` or ``drop``, see the module
    docstring). ``thresholds``: lowest count of low, moderate and active. ``normalize``: per-window peak
    normalisation to the training level. ``block_s``: seconds decoded at a time (memory stays bounded).
    """

    hop_s: float = WINDOW_S
    tail: str = "align"
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    normalize: bool = True
    block_s: float = 60.0

    def __post_init__(self) -> None:
        if not (isinstance(self.hop_s, (int, float)) and math.isfinite(self.hop_s) and self.hop_s > 0):
            raise MeterError(f"hop must be a positive number of seconds, got {self.hop_s!r}")
        if self.tail not in TAILS:
            raise MeterError(f"tail must be one of {TAILS}, got {self.tail!r}")
        check_thresholds(self.thresholds)
        if not self.block_s > 0:
            raise MeterError(f"block_s must be > 0, got {self.block_s!r}")


def check_thresholds(thresholds: Sequence[int]) -> tuple[int, ...]:
    """Three strictly increasing counts >= 1 (the lowest count of low, moderate, active)."""
    t = tuple(thresholds)
    if len(t) != 3 or not all(isinstance(v, (int, np.integer)) for v in t) or t[0] < 1 or not t[0] < t[1] < t[2]:
        raise MeterError(f"thresholds must be three increasing whole counts >= 1 (low, moderate, active), got {t}")
    return tuple(int(v) for v in t)


def level_index(counts: np.ndarray | Sequence[int], thresholds: Sequence[int] = DEFAULT_THRESHOLDS) -> np.ndarray:
    """Level of each count: 0 none, 1 low, 2 moderate, 3 active (thresholds checked first)."""
    return level_of(counts, check_thresholds(thresholds))


def levels_of(counts: np.ndarray | Sequence[int], thresholds: Sequence[int] = DEFAULT_THRESHOLDS) -> np.ndarray:
    """Level names of counts (``"none"``, ``"low"``, ``"moderate"``, ``"active"``)."""
    return np.asarray(LEVEL_NAMES, dtype=object)[level_index(counts, thresholds)]


# --------------------------------------------------------------------------------------------- decoding
@dataclass
class AudioInfo:
    """What the decoder learned about its input: name, input rate and channels, samples at the output rate, and
    warnings about the input (a truncated file) that do not stop the count."""

    name: str
    input_rate: int
    channels: int
    n_samples: int = 0
    decode_s: float = 0.0
    warnings: list[str] = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def audio_blocks(audio: str | os.PathLike | BinaryIO | np.ndarray, sample_rate: int = SAMPLE_RATE,
                 block_s: float = 60.0, input_rate: int | None = None) -> Iterator[tuple[Iterator[np.ndarray],
                                                                                      AudioInfo]]:
    """Yield ``(blocks, info)``: mono float32 blocks of ``audio`` at ``sample_rate``, decoded lazily.

    ``audio``: a path, ``"-"`` (standard input, read whole: a pipe cannot seek), a binary file object, or an array
    ``(samples,)``/``(samples, channels)`` with its ``input_rate``. ``info.n_samples`` and ``info.decode_s``
    (decoding and resampling time) grow as the blocks are consumed.
    """
    if isinstance(audio, np.ndarray):
        if input_rate is None:
            raise MeterError("an audio array needs its sample rate (input_rate=...)")
        x = audio[:, None] if audio.ndim == 1 else audio
        if x.ndim != 2 or x.size == 0:
            raise MeterError(f"an audio array must be (samples,) or (samples, channels), got shape {audio.shape}")
        info = AudioInfo("<array>", int(input_rate), int(x.shape[1]))
        yield _timed(_resample_blocks(_array_reader(x), int(input_rate), sample_rate, block_s), info), info
        return
    name, f, head = _open_soundfile(audio)
    with f:
        info = AudioInfo(name, int(f.samplerate), int(f.channels), warnings=_truncation(name, f, head))
        yield _timed(_resample_blocks(_file_reader(f, name), info.input_rate, sample_rate, block_s), info), info


def _open_soundfile(audio: str | os.PathLike | BinaryIO) -> tuple[str, sf.SoundFile, bytes]:
    """``(name, opened file, its first bytes)``; the bytes (empty for a stream that cannot be peeked) let
    :func:`_truncation` read a WAV header's own length."""
    head = b""
    if isinstance(audio, (str, os.PathLike)) and str(audio) == "-":
        name, data = "<stdin>", sys.stdin.buffer.read()
        if not data:
            raise MeterError("standard input is empty: pipe an audio file into it")
        audio, head = io.BytesIO(data), data[:_HEAD_BYTES]
    elif isinstance(audio, (str, os.PathLike)):
        path = Path(audio)
        name = str(path)
        if not path.exists():
            raise MeterError(f"audio file {path} does not exist")
        if not path.is_file():
            raise MeterError(f"{path} is not a file")
        if path.stat().st_size == 0:
            raise MeterError(f"audio file {path} is empty")
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    else:
        name = getattr(audio, "name", "<stream>")
    try:
        return str(name), sf.SoundFile(audio if not isinstance(audio, (str, os.PathLike)) else str(audio)), head
    except Exception as e:  # noqa: BLE001 - soundfile raises several types for non-audio and corrupt data
        raise MeterError(f"cannot read {name} as audio (wav/flac/ogg): {_first_line(e)}") from e


_HEAD_BYTES = 1 << 16  # enough for the chunks a WAV writer puts before its audio


def _truncation(name: str, f: sf.SoundFile, head: bytes) -> list[str]:
    """A warning when a WAV file holds fewer frames than its header declares (a copy cut short): libsndfile reads
    what is there without a word, so the meter says it."""
    declared = _declared_wav_frames(head)
    if declared is None or declared <= f.frames:
        return []
    rate = f.samplerate
    return [f"{name} is truncated: its header declares {declared / rate:.2f} s of audio but the file holds "
            f"{f.frames / rate:.2f} s; counting what is there"]


def _declared_wav_frames(head: bytes) -> int | None:
    """Frames the ``data`` chunk of a RIFF/WAVE header declares (``None``: not a plain WAV, or a streamed one whose
    writer left the length open)."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, block_align = 12, 0
    while pos + 8 <= len(head):
        chunk, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk == b"fmt " and pos + 22 <= len(head):
            block_align = int.from_bytes(head[pos + 20:pos + 22], "little")  # bytes per frame
        if chunk == b"data":
            return size // block_align if block_align and size not in (0, 0xFFFFFFFF) else None
        pos += 8 + size + (size & 1)
    return None


def _file_reader(f: sf.SoundFile, name: str) -> Callable[[int], np.ndarray]:
    """A function of n -> up to n mono frames of ``f`` (empty at the end), checked for corrupt data."""
    def read(n: int) -> np.ndarray:
        try:
            x = f.read(n, dtype="float32", always_2d=True)
        except Exception as e:  # noqa: BLE001
            raise MeterError(f"cannot decode {name}: {_first_line(e)}") from e
        x = _mono(x)
        if not np.isfinite(x).all():
            raise MeterError(f"{name} holds non-finite samples (NaN or infinity): the file is corrupt")
        return x
    return read


def _mono(x: np.ndarray) -> np.ndarray:
    """Average of the channels of (frames, channels): a matrix-vector product (numpy's mean over a short axis
    is several times slower, and decoding is most of the meter's time on 44.1-kHz stereo)."""
    if x.shape[1] == 1:
        return np.ascontiguousarray(x[:, 0])
    return x @ np.full(x.shape[1], 1 / x.shape[1], np.float32)


def _array_reader(x: np.ndarray) -> Callable[[int], np.ndarray]:
    mono = _mono(np.asarray(x, np.float32))
    if not np.isfinite(mono).all():
        raise MeterError("the audio array holds non-finite samples (NaN or infinity)")
    pos = 0

    def read(n: int) -> np.ndarray:
        nonlocal pos
        out = mono[pos:pos + n]
        pos += len(out)
        return out
    return read


def _resample_blocks(read: Callable[[int], np.ndarray], rate_in: int, rate_out: int,
                     block_s: float) -> Iterator[np.ndarray]:
    """Blocks at ``rate_out``, equal (up to float rounding) to resampling the whole signal at once.

    Each input block is resampled with a margin of neighbouring samples beyond the reach of resample_poly's
    filter; block edges sit on multiples of ``down`` input samples, which map to whole output samples.
    """
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    block = max(int(block_s * rate_in) // down * down, down)
    if up == down:
        while len(x := read(block)):
            yield x
        return
    reach = math.ceil(10 * max(up, down) / up) + 1  # resample_poly's default filter: 10 * max(up, down) taps a side
    margin = math.ceil(reach / down) * down
    buf, buf_lo, done, eof = np.zeros(0, np.float32), 0, 0, False
    while not eof:
        chunk = read(block)
        eof = len(chunk) == 0
        buf = np.concatenate([buf, chunk])
        hi = buf_lo + len(buf)
        end = hi if eof else (hi - margin) // down * down
        if end <= done:
            continue
        lo = max(done - margin, 0)
        seg = buf[lo - buf_lo:(hi if eof else end + margin) - buf_lo]
        y = resample_poly(seg, up, down).astype(np.float32)
        skip = (done - lo) * up // down
        yield y[skip:skip + math.ceil((end - done) * up / down)]
        done = end
        keep = max(done - margin, 0)
        buf, buf_lo = buf[keep - buf_lo:], keep


def _timed(blocks: Iterator[np.ndarray], info: AudioInfo) -> Iterator[np.ndarray]:
    while True:
        t0 = time.perf_counter()
        block = next(blocks, None)
        info.decode_s += time.perf_counter() - t0
        if block is None:
            return
        info.n_samples += len(block)
        yield block


# --------------------------------------------------------------------------------------------- windows
def iter_windows(blocks: Iterable[np.ndarray], window: int, hop: int, tail: str = "align",
                 batch: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(start samples (n,), windows (n, window))`` in batches of at most ``batch``, from a stream of blocks.

    Keeps at most one block plus one window in memory. ``tail="align"`` ends with a window that ends at the last
    sample when the grid leaves samples over. Yields nothing when the stream is shorter than one window.
    """
    if window < 1 or hop < 1 or batch < 1:
        raise MeterError(f"window, hop and batch must be >= 1 sample, got {window}, {hop}, {batch}")
    if tail not in TAILS:
        raise MeterError(f"tail must be one of {TAILS}, got {tail!r}")
    buf, lo, nxt, total, last_end = np.zeros(0, np.float32), 0, 0, 0, 0
    for block in blocks:
        buf = np.concatenate([buf, block])
        total += len(block)
        while nxt + window <= total:
            starts = nxt + hop * np.arange(min(batch, (total - nxt - window) // hop + 1))
            yield starts, np.lib.stride_tricks.sliding_window_view(buf, window)[starts - lo]
            last_end, nxt = int(starts[-1]) + window, int(starts[-1]) + hop
        keep = max(lo, min(nxt, total - window))  # future windows start at nxt; the tail needs the last window
        buf, lo = buf[keep - lo:], keep
    if tail == "align" and total >= window and last_end < total:
        yield np.array([total - window]), buf[total - window - lo:][None]


# --------------------------------------------------------------------------------------------- the meter
def count(audio: str | os.PathLike | BinaryIO | np.ndarray, counter: WindowCounter, cfg: MeterConfig | None = None,
          *, input_rate: int | None = None, **overrides: Any) -> pd.DataFrame:
    """Per-window counts and ambiance levels of a recording (chapter 6's streaming meter).

    Columns: ``start_s, end_s, count`` (the most probable count; empty for a levels model), ``level`` and
    ``p_<class>`` for each class. ``df.attrs``: ``audio_s``, ``decode_s`` (reading + resampling), ``model_s``
    (normalisation + model), ``total_s``, ``rtf`` (total_s / audio_s) and ``speed_x`` (its inverse), and the
    settings. ``overrides`` replace fields of ``cfg`` (e.g. ``hop_s=2.5``).
    """
    cfg = dataclasses.replace(cfg or MeterConfig(), **overrides)
    kind = class_kind(counter.classes)
    if not cfg.normalize and getattr(counter, "normalizes", False):
        raise MeterError("this model brings each window to the training level inside the program (its card says "
                         "normalizes: true); normalize=False (--no-normalize) cannot turn that off")
    rate = int(counter.sample_rate)
    window, hop = int(round(counter.window_s * rate)), int(round(cfg.hop_s * rate))
    if hop < 1:
        raise MeterError(f"hop {cfg.hop_s!r} s is shorter than one sample at {rate} Hz")
    starts, probs = [], []
    t0 = time.perf_counter()
    with audio_blocks(audio, rate, cfg.block_s, input_rate) as (blocks, info):
        for s, w in iter_windows(blocks, window, hop, cfg.tail):
            p = np.asarray(counter.predict_proba(peak_normalize(w) if cfg.normalize else w), np.float64)
            if p.shape != (len(s), len(counter.classes)) or not np.isfinite(p).all():
                raise MeterError(f"the model returned {p.shape} (finite: {np.isfinite(p).all()}) for {len(s)} "
                                 f"windows; expected ({len(s)}, {len(counter.classes)}) probabilities")
            starts.append(s)
            probs.append(p)
    total_s = time.perf_counter() - t0
    if not starts:
        raise MeterError(f"{info.name} is {info.n_samples / rate:.2f} s long, shorter than one "
                         f"{counter.window_s:g}-s window")
    starts_a, probs_a = np.concatenate(starts), np.concatenate(probs)
    best = probs_a.argmax(axis=1)
    df = pd.DataFrame({"start_s": starts_a / rate, "end_s": (starts_a + window) / rate})
    if kind == "counts":
        df["count"] = best.astype(np.int64)
        df["level"] = levels_of(best, cfg.thresholds)
    else:
        df["count"] = pd.array([pd.NA] * len(best), dtype="Int64")
        df["level"] = np.asarray(LEVEL_NAMES, dtype=object)[best]
    for c, column in zip(counter.classes, probs_a.T):
        df[f"p_{c}"] = column
    audio_s = info.n_samples / rate
    df.attrs = {"source": info.name, "audio_s": audio_s, "audio_samples": info.n_samples,
                "input_sample_rate": info.input_rate, "input_channels": info.channels, "sample_rate": rate,
                "window_s": float(counter.window_s), "hop_s": float(cfg.hop_s), "tail": cfg.tail,
                "thresholds": list(cfg.thresholds), "normalize": cfg.normalize, "classes": list(counter.classes),
                "decode_s": info.decode_s, "model_s": total_s - info.decode_s, "total_s": total_s,
                "warnings": list(info.warnings),
                "rtf": total_s / audio_s, "speed_x": audio_s / total_s if total_s > 0 else float("inf")}
    return df


def summary_line(df: pd.DataFrame) -> str:
    """One line on what :func:`count` did: windows, audio length, time, real-time factor, level shares."""
    a = df.attrs
    shares = df["level"].value_counts(normalize=True)
    levels = ", ".join(f"{name} {shares.get(name, 0.0):.0%}" for name in LEVEL_NAMES)
    return (f"{len(df)} windows of {a['window_s']:g} s (hop {a['hop_s']:g} s) over {a['audio_s']:.1f} s of "
            f"{a['source']} in {a['total_s']:.3f} s: {a['speed_x']:.0f}x real time (RTF {a['rtf']:.2g}); {levels}")


# --------------------------------------------------------------------------------------------- output
def to_json(df: pd.DataFrame) -> dict[str, Any]:
    """``{"meta": df.attrs, "windows": [one dict per window]}`` (missing counts become null)."""
    return {"meta": dict(df.attrs), "windows": json.loads(df.to_json(orient="records", double_precision=6))}


def output_format(path: str | os.PathLike) -> str:
    """``csv`` or ``json`` from a file name; :class:`MeterError` for any other suffix."""
    fmt = Path(path).suffix.lstrip(".").lower()
    if fmt not in ("csv", "json"):
        raise MeterError(f"cannot tell the output format of {path}: use a .csv or .json name")
    return fmt


def plot_format(path: str | os.PathLike) -> str:
    """The image format of a plot file name (``png``, ``pdf``, ``svg``, ... what matplotlib writes); :class:`MeterError`
    for any other suffix, so that a bad name is refused before the work."""
    from matplotlib.backend_bases import FigureCanvasBase

    fmt = Path(path).suffix.lstrip(".").lower()
    known = FigureCanvasBase.get_supported_filetypes()
    if fmt not in known:
        raise MeterError(f"cannot tell the image format of {path}: use one of {', '.join('.' + k for k in known)}")
    return fmt


def write_windows(df: pd.DataFrame, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write the meter's table atomically as CSV or JSON (``fmt`` or the file suffix decides)."""
    path = Path(path)
    fmt = fmt or output_format(path)
    if fmt == "csv":
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")
    elif fmt == "json":
        atomic_write_json(path, to_json(df))
    else:
        raise MeterError(f"format must be csv or json, got {fmt!r}")
    return path


def format_windows(df: pd.DataFrame, fmt: str = "csv") -> str:
    """The table as CSV or JSON text (what the CLI prints)."""
    if fmt == "csv":
        return df.to_csv(index=False, float_format="%.6g")
    if fmt == "json":
        return json.dumps(to_json(df), indent=2) + "\n"
    raise MeterError(f"format must be csv or json, got {fmt!r}")


LEVEL_COLOURS = {"none": "#d9d9d9", "low": "#a6d96a", "moderate": "#fdae61", "active": "#d7191c"}


def plot_timeline(df: pd.DataFrame, path: str | os.PathLike | None = None, truth: Sequence[int] | None = None,
                  title: str | None = None) -> Any:
    """The meter's counts over time on a background coloured by ambiance level; ``truth`` (counts per window)
    is drawn dashed. Saved atomically when ``path`` is given (format from its suffix). Returns the figure."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    fig = Figure(figsize=(10, 3.2), layout="constrained")
    ax = fig.add_subplot()
    mid = ((df["start_s"] + df["end_s"]) / 2).to_numpy()
    half = float(min(df.attrs.get("hop_s", WINDOW_S), df.attrs.get("window_s", WINDOW_S))) / 2
    for m, level in zip(mid, df["level"]):
        ax.axvspan(m - half, m + half, color=LEVEL_COLOURS[level], alpha=0.35, lw=0)
    if df["count"].notna().all():
        ax.plot(mid, df["count"].to_numpy(float), drawstyle="steps-mid", color="k", lw=1.3, label="meter")
        ax.set_ylabel("speakers")
    else:
        ax.plot(mid, [LEVEL_NAMES.index(v) for v in df["level"]], drawstyle="steps-mid", color="k", label="meter")
        ax.set_yticks(range(len(LEVEL_NAMES)), LEVEL_NAMES)
    if truth is not None:
        ax.plot(mid, np.asarray(truth, float), drawstyle="steps-mid", color="tab:blue", ls="--", lw=1.2,
                label="annotation")
    ax.set_xlabel("time (s)")
    ax.set_xlim(float(df["start_s"].min()), float(df["end_s"].max()))
    handles = ax.get_legend_handles_labels()[0] + [Patch(color=LEVEL_COLOURS[n], alpha=0.35, label=n)
                                                  for n in LEVEL_NAMES]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title(title or f"social ambiance of {df.attrs.get('source', 'the recording')}")
    if path is not None:
        path = Path(path)
        fmt = plot_format(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format=fmt)
    return fig

