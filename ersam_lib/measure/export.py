"""Exporting a network to the runtimes it is deployed on, running it there, and the timing protocol (chapters 2, 6).

- :func:`export_executorch`: ``torch.export`` -> an XNNPACK-lowered ExecuTorch program (``.pte`` bytes);
- :func:`export_onnx`: an ONNX file for ONNX Runtime;
- :func:`runner_for`: a zero-argument callable that runs one forward pass through a backend of :data:`BACKENDS`
  (PyTorch eager, ExecuTorch + XNNPACK, ONNX Runtime) on a fixed input, for timing;
- the timing protocol (why, see chapter 2): a fixed, small thread count (:func:`torch_threads`, 1 by default) so that
  timings do not depend on what else runs; warm-up calls first, because the first calls pay for allocation, lazy
  initialisation and cold caches; many repeats (:func:`time_calls` with a :class:`TimingConfig`). Which statistic
  summarises the repeats is the caller's choice: chapter 2's cost model uses the *minimum* by default, because
  interference from other processes only ever adds time.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.io import atomic_path
from ..core.scales import sizes

__all__ = [
    "BACKENDS", "TimingConfig", "export_executorch", "export_onnx", "load_executorch", "quiet_executorch",
    "runner_for", "time_calls", "torch_threads",
]

BACKENDS: tuple[str, ...] = ("eager", "executorch", "onnxruntime")


@dataclass
class TimingConfig:
    """How many calls to make: ``warmup`` untimed calls, then ``repeats`` timed calls, cut short (but never below
    ``min_repeats``) when the timed calls exceed ``max_seconds``, so one huge operator cannot stall a grid; and
    continued past ``repeats`` until they add up to ``min_seconds`` (timeit's autorange idea): thirty calls of a
    0.1-ms ExecuTorch network last 3 ms, too short for a minimum that repeats within a few per cent."""

    warmup: int = 5
    repeats: int = 30
    min_repeats: int = 5
    max_seconds: float = 1.0
    min_seconds: float = 0.0

    @classmethod
    def for_scale(cls, scale: str) -> TimingConfig:
        return cls(**sizes("timing", scale))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def time_calls(fn: Callable[[], Any], cfg: TimingConfig) -> list[float]:
    """Warm up, then time calls of ``fn`` in ms (see :class:`TimingConfig`)."""
    for _ in range(cfg.warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        elapsed = time.perf_counter() - start
        if len(samples) >= cfg.min_repeats and elapsed > cfg.max_seconds:
            return samples
        if len(samples) >= cfg.repeats and elapsed >= cfg.min_seconds:
            return samples


# --------------------------------------------------------------------------------------------- exporters
def export_executorch(module: nn.Module, x: torch.Tensor) -> bytes:
    """``torch.export`` -> XNNPACK-lowered ExecuTorch program (.pte bytes); chapter 2 times it, chapter 6 ships it."""
    with quiet_executorch():  # import chatter, and torch.export's warning about an LSTM's flat weights (handled)
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        exported = torch.export.export(module.eval(), (x,))
        return to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def export_onnx(module: nn.Module, x: torch.Tensor, path: str | os.PathLike, dynamo: bool = False) -> Path:
    """Export ``module`` to ONNX at ``path``: by default with the TorchScript-based exporter (fast, handles LSTM/GRU;
    chapter 2); ``dynamo=True`` uses the ``torch.export``-based one, which also translates PT2E's int8
    quantize/dequantize operators into ONNX's QuantizeLinear/DequantizeLinear (chapter 6)."""
    with torch.no_grad(), atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter warns about RNN batch sizes it cannot check
        if dynamo:
            torch.onnx.export(module.eval(), (x,), str(tmp), dynamo=True, input_names=["x"], verbose=False,
                              external_data=False)
        else:
            torch.onnx.export(module.eval(), (x,), str(tmp), dynamo=False, input_names=["x"])
    return Path(path)


@contextlib.contextmanager
def quiet_executorch() -> Iterator[None]:
    """Silence ExecuTorch's start-up chatter (cpuinfo probes, threadpool resets, a torch pytree deprecation)."""
    log = logging.getLogger("torch.utils._pytree")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


# --------------------------------------------------------------------------------------------- runners
def runner_for(backend: str, module: nn.Module | str | os.PathLike | bytes, x: torch.Tensor,
               threads: int = 1) -> Callable[[], Any]:
    """A callable that runs one forward pass of ``module`` on ``x`` through ``backend`` (exporting it first when
    given an ``nn.Module``; a ``.pte``/``.onnx`` path or ``.pte`` bytes are run as they are)."""
    if backend not in _RUNNERS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return _RUNNERS[backend](module, x, threads)


def _eager_runner(module: Any, x: torch.Tensor, threads: int) -> Callable[[], Any]:
    if not isinstance(module, nn.Module):
        raise TypeError(f"the eager backend runs an nn.Module, got {type(module).__name__}")
    module.eval()
    return lambda: module(x)


def load_executorch(program: bytes | str | os.PathLike, threads: int = 1) -> tuple[Any, Any]:
    """``(program, method)``: the ``forward`` method of an ExecuTorch program (bytes or a ``.pte`` path), with
    XNNPACK's thread pool set to ``threads`` (chapters 2 and 6). Keep the program alive as long as the method."""
    with quiet_executorch():
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        data = program if isinstance(program, bytes) else Path(program).read_bytes()
        portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's pool, else it uses every core
        loaded = Runtime.get().load_program(data)
        return loaded, loaded.load_method("forward")


def _executorch_runner(module: Any, x: torch.Tensor, threads: int) -> Callable[[], Any]:
    if isinstance(module, nn.Module):
        with torch.no_grad(), quiet_executorch():  # export refuses inference-mode tensors
            module = export_executorch(module, x.clone())
    program, method = load_executorch(module, threads)
    inputs = (x.clone(),)
    # The closure keeps the program alive: a method outliving its program reads freed memory.
    return lambda: (program, method.execute(inputs))[1]


def _onnx_runner(module: Any, x: torch.Tensor, threads: int) -> Callable[[], Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(module, nn.Module):
            path = export_onnx(module, x.clone(), Path(tmp) / "model.onnx")
        else:
            path = Path(module)
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


_RUNNERS: dict[str, Callable[[Any, torch.Tensor, int], Callable[[], Any]]] = {
    "eager": _eager_runner, "executorch": _executorch_runner, "onnxruntime": _onnx_runner,
}
