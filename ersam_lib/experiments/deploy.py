"""Deploying a chosen model (chapter 6): audio in, logits out; int8 by PT2E; ExecuTorch and ONNX programs with cards.

- :class:`AudioCounter`: the front end (:class:`~ersam_lib.measure.frontend.LogMelFrontEnd`, level normalisation
  included) and a model of chapter 5 in one module, ``(B, samples)`` 16-kHz windows -> logits; :func:`audio_counter`
  builds it for a chosen model of a run;
- :func:`quantize_pt2e`: post-training int8 with PyTorch's PT2E flow and ExecuTorch's XNNPACK quantizer
  (symmetric, per-channel weights, calibrated on training windows); the model is quantized, the front end stays in
  float (its log of a power spectrum needs the dynamic range);
- :func:`precision_scores`: float and int8 accuracy and MAE of the models on the run's feature splits;
- :func:`export_program` writes a ``.pte`` (ExecuTorch, XNNPACK delegate) or ``.onnx`` program and its card
  (:class:`ersam_lib.core.cards.ModelCard`: the chosen model's card made the program's, with its costs), so that
  ``python -m ersam_lib count AUDIO --model RUN_DIR/deploy/<name>.pte`` runs it;
- :func:`measure_program`: size, latency per 5-s window (chapter 2's protocol, one thread) and peak memory (a fresh
  process, its resident-set high-water mark above the runtime's own footprint) of a program file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from ..core.cards import ModelCard, card_path, claim, identity
from ..core.io import atomic_write_bytes
from ..core.rundir import stage_dir
from ..core.scales import sizes
from ..measure.complexity import count_params, macs_per_sample
from ..measure.evaluation import count_report, eval_loader, predict
from ..measure.export import (TimingConfig, export_executorch, export_onnx, quiet_executorch, runner_for, time_calls,
                              torch_threads)
from ..measure.frontend import LogMelFrontEnd
from ..measure.uncertainty import mcnemar
from .frontier import load_chosen

__all__ = [
    "PRECISIONS", "RUNTIMES", "STEM_SUFFIX", "AudioCounter", "DeployConfig", "audio_counter", "cost_breakdown",
    "export_program", "feature_batch", "measure_program", "peak_memory_mb", "precision_scores", "program_path",
    "quantize_pt2e",
]

PRECISIONS: tuple[str, ...] = ("float", "int8")
RUNTIMES: dict[str, str] = {"executorch": ".pte", "onnxruntime": ".onnx"}
STEM_SUFFIX: dict[str, str] = {"executorch": "", "onnxruntime": "_onnx"}  # a card per program: stems must differ


@dataclass(frozen=True)
class DeployConfig:
    """Chapter 6's sizes: training windows that calibrate int8, test windows that check the front end against
    chapter 1's cached features, the precision the meter streams with, and how often the meter's speed is timed."""

    n_calibration: int = 512
    n_check: int = 64
    meter_precision: str = "int8"
    meter_repeats: int = 3

    def __post_init__(self) -> None:
        if self.n_calibration < 1 or self.n_check < 1 or self.meter_repeats < 1:
            raise ValueError(f"need n_calibration, n_check and meter_repeats >= 1; got {self}")
        if self.meter_precision not in PRECISIONS:
            raise ValueError(f"meter_precision must be one of {PRECISIONS}, got {self.meter_precision!r}")

    @classmethod
    def for_scale(cls, scale: str, **overrides: Any) -> DeployConfig:
        """``smoke``: every training window (160) calibrates, 16 are checked; ``tutorial``: 512 and 64; ``paper``:
        2048 and 256."""
        return cls(**(sizes("deploy", scale) | overrides))


class AudioCounter(nn.Module):
    """``(B, samples)`` raw 16-kHz audio -> logits ``(B, classes)``: the front end, then the model (chapter 6)."""

    def __init__(self, frontend: LogMelFrontEnd, model: nn.Module) -> None:
        super().__init__()
        self.frontend, self.model = frontend, model

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.model(self.frontend(audio))


def audio_counter(run_dir: str | os.PathLike, name: str) -> tuple[AudioCounter, ModelCard]:
    """``(AudioCounter, card)`` for the model ``name`` that chapter 5 chose, with the front end its card records."""
    model, card = load_chosen(run_dir, name)
    return AudioCounter(LogMelFrontEnd.from_card(card.features), model).eval(), card


def feature_batch(ds: Dataset, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` inputs of a dataset drawn without replacement (all if fewer), stacked: calibration data."""
    idx = np.random.default_rng(seed).permutation(len(ds))[:n]  # type: ignore[arg-type]
    return torch.stack([torch.as_tensor(ds[int(i)][0]) for i in sorted(idx)]).float()


def quantize_pt2e(model: nn.Module, calibration: torch.Tensor, batch_size: int = 64) -> nn.Module:
    """Post-training int8 of ``model`` with the PT2E flow: ``torch.export`` (dynamic batch), the XNNPACK quantizer
    (symmetric int8, per-channel weights) annotates, observers see ``calibration`` (inputs of the model, e.g.
    training features, in batches of ``batch_size``), and ``convert_pt2e`` inserts the quantize/dequantize pairs
    that the XNNPACK delegate runs as int8 kernels. The result runs in PyTorch too (simulated int8), in eval mode."""
    with quiet_executorch():  # torchao's import warns about a torch.compile deprecation
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                             get_symmetric_quantization_config)
        from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad(), quiet_executorch():
        graph = torch.export.export(model.eval(), (calibration[:2],), dynamic_shapes=({0: batch},)).module()
        prepared = prepare_pt2e(graph, quantizer)
        for i in range(0, len(calibration), batch_size):
            prepared(calibration[i:i + batch_size])
        quantized = move_exported_model_to_eval(convert_pt2e(prepared))
    return allow_exported_model_train_eval(quantized)  # so that .eval() of a module holding it works


def precision_scores(models: Mapping[str, Mapping[str, nn.Module]], splits: Mapping[str, Dataset],
                     n_classes: int) -> pd.DataFrame:
    """One row per (model, split): accuracy (with its 95 % interval), MAE and level accuracy of each precision of
    ``models`` (``{name: {"float": m, "int8": q}}``) on feature ``splits``; where both precisions are there, the drop
    in points from float to int8 with its interval and McNemar's exact test on the same windows (``int8_p``), and
    the verdict it gives (``int8_verdict``: "float better", "int8 better" or "not distinguishable at this scale")."""
    rows = []
    for name, variants in models.items():
        for split, ds in splits.items():
            row: dict[str, Any] = {"model": name, "split": split, "n": len(ds)}  # type: ignore[arg-type]
            right = {}
            for precision, m in variants.items():
                y, p = predict(m, eval_loader(ds))
                r = count_report(y, p, n_classes)
                right[precision] = p == y
                row |= {f"{precision}_{k}": r[k] for k in ("acc", "acc_low", "acc_high", "mae", "level_acc")}
            if {"float", "int8"} <= set(right):
                t = mcnemar(right["float"], right["int8"])
                row |= t.points("int8_drop_points") | {"int8_p": t.p_value, "int8_verdict": t.verdict("float", "int8")}
            rows.append(row)
    return pd.DataFrame(rows)


def cost_breakdown(frontend: LogMelFrontEnd, networks: Mapping[str, nn.Module], window: torch.Tensor,
                   timing: TimingConfig | None = None) -> pd.DataFrame:
    """What a deployed program's costs are made of (chapter 6): the front end alone and the network alone, each
    exported to ExecuTorch + XNNPACK on its own and measured like the programs (the ``.pte``'s size, the latency of
    one window on one thread with chapter 2's protocol), with their MACs and the bytes of their weights.
    ``networks`` maps a precision to the network (``float``, PT2E ``int8``); the front end is the same float module in
    every program (only the network is quantized). ``window`` is one ``(1, samples)`` audio window."""
    with torch.no_grad():
        features = frontend(window).contiguous()  # the network program takes a dense tensor
    float_net = networks.get("float", next(iter(networks.values())))
    macs = {"front end": macs_per_sample(frontend, window), "network": macs_per_sample(float_net, features)}
    params = count_params(float_net)
    weight_kb = {("front end", "float"): sum(b.numel() * b.element_size() for b in frontend.buffers()) / 1000,
                 ("network", "float"): 4 * params / 1000, ("network", "int8"): params / 1000}
    # a PT2E network's eval() returns nothing (allow_exported_model_train_eval): export it inside a plain module
    parts = [("front end", "float", frontend, window),
             *(("network", p, nn.Sequential(m), features) for p, m in networks.items())]
    rows = []
    for part, precision, module, x in parts:
        with torch.no_grad(), torch_threads(1):
            program = export_executorch(module, x)
            samples = time_calls(runner_for("executorch", program, x, 1), timing or TimingConfig())
        rows.append({"part": part, "precision": precision, "program_kb": len(program) / 1000,
                     "weights_kb": weight_kb.get((part, precision)), "macs": macs[part],
                     "latency_ms": float(np.min(samples)), "latency_median_ms": float(np.median(samples))})
    return pd.DataFrame(rows)


def program_path(run_dir: str | os.PathLike, name: str, precision: str, runtime: str = "executorch") -> Path:
    """``RUN_DIR/deploy/<name>_<precision>.pte`` (``<name>_<precision>_onnx.onnx`` for ONNX: every program has its
    own ``.json`` card beside it): where chapter 6 writes a deployed program."""
    if precision not in PRECISIONS or runtime not in RUNTIMES:
        raise ValueError(f"precision must be one of {PRECISIONS} and runtime one of {tuple(RUNTIMES)}")
    return stage_dir(run_dir, "deploy") / f"{name}_{precision}{STEM_SUFFIX[runtime]}{RUNTIMES[runtime]}"


def export_program(module: nn.Module, path: str | os.PathLike, card: ModelCard, timing: TimingConfig | None = None,
                   **fields: Any) -> Path:
    """Export ``module`` (one ``(1, samples)`` window -> logits) to ``path`` (``.pte``: ExecuTorch with the XNNPACK
    delegate; ``.onnx``: ONNX Runtime) and write its card beside it: the model's ``card`` (chapter 5's: name,
    architecture, classes, front end, manifest hash) made the program's (its file, format, digest, raw-audio input,
    whether it normalises the level itself: an :class:`AudioCounter` with its front end's normalisation), with
    ``fields`` (``precision``, ``runtime``, ``metrics``, ...) and, when ``timing`` is given, the costs
    :func:`measure_program` measured. Returns the path."""
    path = Path(path)
    if path.suffix not in RUNTIMES.values():
        raise ValueError(f"a deployed program is a .pte or .onnx file, got {path}")
    x = torch.zeros(1, round(card.window_s * card.sample_rate))
    claim(path)  # first: refuses a card of another file
    card_path(path).unlink(missing_ok=True)  # no card of an earlier program beside the new one
    try:
        with torch.no_grad(), quiet_executorch():
            if path.suffix == ".pte":
                atomic_write_bytes(path, export_executorch(module, x))
            else:
                export_onnx(module, x, path, dynamo=True)  # the exporter that translates int8 too
        program = dataclasses.replace(
            card, **identity(path), input={"kind": "audio", "shape": list(x.shape), "dtype": "float32"}, batch=1,
            report={}, normalizes=isinstance(module, AudioCounter) and module.frontend.normalize, **fields)
        program.save(path.parent)  # measure_program reads its input shape
    except Exception:
        card_path(path).unlink(missing_ok=True)  # no card without its program
        path.unlink(missing_ok=True)
        raise
    if timing is not None:
        dataclasses.replace(program, costs=measure_program(path, timing)).save(path.parent)
    return path


def measure_program(path: str | os.PathLike, timing: TimingConfig | None = None, threads: int = 1,
                    memory: bool = True) -> dict[str, float]:
    """Size (kB), latency per window (ms: min and median over chapter 2's repeats) and peak memory (MB, a fresh
    process: :func:`peak_memory_mb`) of a ``.pte``/``.onnx`` program, run on ``threads`` threads."""
    path = Path(path)
    runtime = {v: k for k, v in RUNTIMES.items()}[path.suffix]
    x = torch.zeros(_input_shape(path))
    with torch_threads(threads):
        samples = time_calls(runner_for(runtime, path, x, threads), timing or TimingConfig())
    out = {"size_kb": path.stat().st_size / 1000, "latency_ms": float(np.min(samples)),
           "latency_median_ms": float(np.median(samples)), "repeats": len(samples)}
    if memory:
        out["peak_mb"] = peak_memory_mb(path, threads)
    return out


def _input_shape(path: Path) -> tuple[int, ...]:
    return tuple(ModelCard.load(path).input["shape"])


_PEAK_SCRIPT = """
import json, sys, torch
from ersam_lib.measure.export import runner_for
path, runtime, shape, threads = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":")) / 1024
x = torch.zeros(shape)
import executorch.runtime, onnxruntime  # the runtimes' own footprint is not the program's
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark
run = runner_for(runtime, path, x, threads)
for _ in range(3):
    run()
print(json.dumps({"peak_mb": status("VmHWM") - before}))
"""


def peak_memory_mb(path: str | os.PathLike, threads: int = 1) -> float:
    """Peak memory of loading and running a program (MB): a fresh Python process imports the runtimes, then loads
    the program and runs it three times; the result is its resident-set high-water mark (``VmHWM``, reset after the
    imports) minus the resident set before loading. Linux only (``/proc``)."""
    path = Path(path)
    runtime = {v: k for k, v in RUNTIMES.items()}[path.suffix]
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path), runtime, json.dumps(_input_shape(path)),
                          str(threads)], capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"measuring the memory of {path} failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"])
