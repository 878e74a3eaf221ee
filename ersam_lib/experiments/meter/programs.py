"""The models the meter runs (chapter 6): programs with their cards, loaded without running code from them."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


from ...core.cards import FORMATS, CardError, ModelCard, card_path, claim
from ...core.io import atomic_path
from .base import SAMPLE_RATE, WINDOW_S, MeterError, WindowCounter, class_kind, first_line

__all__ = ["ExecuTorchWindowCounter", "OnnxWindowCounter", "PROGRAM_FORMATS", "TorchWindowCounter", "load_counter",
           "read_card", "save_counter"]


# The model files the meter runs: programs that take raw audio (a state dict needs its architecture and front end).
PROGRAM_FORMATS: dict[str, str] = {k: v for k, v in FORMATS.items() if v != "state_dict"}


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
                             f"windows, the input its card describes: {first_line(e)[:200]}") from None
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))


class ExecuTorchWindowCounter(_ProgramCounter):
    """A :class:`WindowCounter` over an ExecuTorch program (``.pte``, chapter 6) that maps a fixed batch of
    ``(batch_size, samples)`` waveforms to logits; XNNPACK runs on ``threads`` threads (default 1)."""

    def __init__(self, program: str | os.PathLike | bytes, classes: Sequence[str], sample_rate: int = SAMPLE_RATE,
                 window_s: float = WINDOW_S, batch_size: int = 1, threads: int = 1, normalizes: bool = False) -> None:
        from ...measure.export import load_executorch

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


def save_counter(model: Any, classes: Sequence[str], path: str | os.PathLike, sample_rate: int = SAMPLE_RATE,
                 window_s: float = WINDOW_S, **card: Any) -> Path:
    """Export ``model`` (``(B, samples)`` -> logits) with ``torch.export`` to ``path`` (``.pt2``, dynamic batch)
    and write its :class:`~ersam_lib.core.cards.ModelCard`; :func:`load_counter` reads both back. ``card``: further
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
                         f"file with its .json card beside it (ersam_lib.experiments.meter.save_counter, "
                         f"ersam_lib.experiments.deploy)")
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
        raise MeterError(f"cannot load model file {path} as {card.format}: {first_line(e)}") from e


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
    from ...core.rundir import rebuild_command, summary_path

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
        raise MeterError(f"cannot load model file {path}: {first_line(e)}") from e
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
                                 f"to load it (unpickling it could run code): {first_line(e)[:160]}") from None

