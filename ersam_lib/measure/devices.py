"""Devices that measure latency (chapter 2): the host CPU, an Android phone over adb, and imported profiles.

Every device answers ``measure(module_or_program, input_shape) -> LatencyStats``: the latency of one forward pass of
a ``(B, F, T)`` input, summarised OFA-style as ``{count, mean, var}`` plus the median and p90, with the metadata
needed to trust the number (device, backend, threads, library versions, input shape, repeats, machine load).

The timing protocol (a fixed thread count, warm-up, many repeats) and the exporters live in
:mod:`ersam_lib.measure.export`; this module adds the devices and what they record: every statistic of the repeats is
kept, and chapter 2's cost model chooses which one it predicts (the minimum by default, because interference from other
processes only ever adds time).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import platform
import re
import shlex
import subprocess
import tempfile
from abc import ABC, abstractmethod
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.io import ArtifactError, read_json
from .costmodel import layer_key_of
from .export import BACKENDS, TimingConfig, export_executorch, runner_for, time_calls, torch_threads

__all__ = [
    "AdbPhone", "battery_energy_mj", "Device", "DEVICES", "get_device", "HostCPU", "ImportedProfile", "LatencyStats",
    "library_versions", "module_key", "parse_battery_samples", "parse_dumpsys_battery", "parse_runner_output",
    "PowerModel"
]


@dataclass
class LatencyStats:
    """Latency of one forward pass in milliseconds: OFA's ``{count, mean, var}`` plus robust statistics."""

    count: int
    mean: float
    var: float
    median: float
    p90: float
    min: float
    energy_mj: float | None = None  # measured energy per pass when the device can measure it (phone)
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], metadata: dict[str, Any] | None = None,
                     energy_mj: float | None = None) -> LatencyStats:
        a = np.asarray(samples_ms, dtype=float)
        if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError(f"need at least one finite, non-negative latency sample, got {list(samples_ms)[:5]}")
        return cls(count=int(a.size), mean=float(a.mean()), var=float(a.var(ddof=1)) if a.size > 1 else 0.0,
                   median=float(np.median(a)), p90=float(np.percentile(a, 90)), min=float(a.min()),
                   energy_mj=energy_mj, metadata=dict(metadata or {}))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class PowerModel:
    """Active power of the device while it computes, in mW; energy per pass = latency x power (chapter 2).

    On the host this is an *assumption*, not a measurement: no power meter is reachable from a container. The
    default, 4 W per busy core, is the order of magnitude of one core of a current x86 server or laptop under load
    (package power divided by cores, uncore included). Idle power is left out: the figures are the energy the
    model adds on top of an idle device, as Speckhard et al. measure it on a phone.
    """

    active_mw_per_core: float = 4000.0
    source: str = "assumed: 4 W per busy x86 core (no power meter on this host)"

    def energy_mj(self, latency_ms: float, threads: int = 1) -> float:
        """Energy in mJ of ``latency_ms`` of compute on ``threads`` busy cores (ms x mW = uJ)."""
        return latency_ms * self.active_mw_per_core * threads / 1000.0


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Versions of the libraries whose kernels are being timed."""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("executorch", "onnxruntime"):
        try:
            versions[name] = __import__(name).__version__ if name != "executorch" else _executorch_version()
        except Exception:  # not installed: the backend is simply unavailable
            versions[name] = "unavailable"
    return versions


def _executorch_version() -> str:
    from importlib.metadata import version

    return version("executorch")


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


class Device(ABC):
    """Something that measures the latency of a model on a ``(B, F, T)`` input (chapter 2)."""

    name: str = "device"
    power: PowerModel | None = None

    @abstractmethod
    def measure(self, module: nn.Module | str | os.PathLike | bytes, input_shape: Sequence[int]) -> LatencyStats:
        """Latency statistics of one forward pass of ``module`` on an input of ``input_shape``."""

    def prepare(self, models: Sequence[tuple[nn.Module, Sequence[int]]]) -> None:
        """Get ready to measure ``(module, input_shape)`` pairs (:meth:`HostCPU.prepare` exports ExecuTorch
        programs up front); nothing to do by default."""

    def metadata(self) -> dict[str, Any]:
        return {"device": self.name}

    def energy_mj(self, stats: LatencyStats) -> float:
        """Energy per pass: measured when the device measured it, else median latency x the power model."""
        if stats.energy_mj is not None:
            return stats.energy_mj
        if self.power is None:
            raise ValueError(f"device {self.name!r} has no power model and measured no energy")
        return self.power.energy_mj(stats.median, int(stats.metadata.get("threads", 1)))


class HostCPU(Device):
    """This machine's CPU, through one of :data:`BACKENDS` (PyTorch eager, ExecuTorch + XNNPACK, ONNX Runtime)."""

    def __init__(self, backend: str = "eager", threads: int = 1, timing: TimingConfig | None = None,
                 power: PowerModel | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r} for host; expected one of {', '.join(BACKENDS)}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.backend, self.threads = backend, threads
        self.timing = timing or TimingConfig()
        self.power = power or PowerModel()
        self.name = f"host-{backend}"
        self._programs: dict[tuple, tuple[nn.Module, bytes]] = {}

    def metadata(self) -> dict[str, Any]:
        return {"device": self.name, "kind": "host", "cpu": _cpu_name(), "machine": platform.machine(),
                "backend": self.backend, "threads": self.threads, "versions": dict(library_versions()),
                "power_mw_per_core": self.power.active_mw_per_core, "power_source": self.power.source,
                "timing": dataclasses.asdict(self.timing)}

    def _program(self, module: Any, x: torch.Tensor) -> Any:
        """For ExecuTorch, the module exported once per (module, input shape) and kept: interleaved rounds over
        many networks would otherwise pay the export (seconds) on every round."""
        if self.backend != "executorch" or not isinstance(module, nn.Module):
            return module
        key = _program_key(module, x.shape)
        if key not in self._programs:
            with torch.no_grad():  # the exporter refuses inference-mode tensors
                self._programs[key] = (module, export_executorch(module.eval(), x.clone()))
        return self._programs[key][1]  # the entry holds the module too, so its id cannot be reused

    def prepare(self, models: Sequence[tuple[nn.Module, Sequence[int]]], workers: int | None = None,
                min_models: int = 8) -> None:
        """Export the ExecuTorch programs of ``(module, input_shape)`` pairs up front, ``workers`` processes at a
        time (default: one per core). An export is seconds of single-threaded Python (6 s per network of chapter 4's
        space on this 2-core host, far more than timing it), so chapter 2's 70 networks export faster on two cores;
        :meth:`measure` then finds them ready, and no export runs beside a measurement. A worker's start-up (torch
        and ExecuTorch imports) costs about 15 s, so fewer than ``min_models`` networks, one worker, or another
        backend leave it to ``measure``, which exports lazily."""
        if self.backend != "executorch":
            return
        todo, seen = [], set()
        for module, shape in models:
            key = _program_key(module, shape)
            if isinstance(module, nn.Module) and key not in self._programs and key not in seen:
                todo.append((module, key[1]))
                seen.add(key)
        workers = min(workers or os.cpu_count() or 1, len(todo))
        if workers < 2 or len(todo) < min_models:
            return
        # spawn, not fork: a forked child of a process whose torch thread pools have started can hang
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            programs = list(pool.map(_export_program, [m for m, _ in todo], [s for _, s in todo]))
        for (module, shape), program in zip(todo, programs):
            self._programs[_program_key(module, shape)] = (module, program)

    def measure(self, module: nn.Module | str | os.PathLike | bytes, input_shape: Sequence[int]) -> LatencyStats:
        x = torch.randn(*input_shape)
        with torch_threads(self.threads):
            fn = runner_for(self.backend, self._program(module, x), x, self.threads)
            with torch.inference_mode():
                samples = time_calls(fn, self.timing)
        meta = self.metadata() | {"input_shape": list(input_shape), "load_avg_1m": os.getloadavg()[0]}
        return LatencyStats.from_samples(samples, meta)


def _program_key(module: Any, shape: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    """How :class:`HostCPU` files an exported program: the module's identity and the input shape."""
    return id(module), tuple(int(d) for d in shape)


def _export_program(module: nn.Module, shape: tuple[int, ...]) -> bytes:
    """One ExecuTorch export in a worker process of :meth:`HostCPU.prepare` (one thread: the workers share the
    cores)."""
    torch.set_num_threads(1)
    with torch.no_grad():  # the exporter refuses inference-mode tensors
        return export_executorch(module.eval(), torch.randn(*shape))


# --------------------------------------------------------------------------------------------------------------------
# Android phone over adb: ExecuTorch's executor_runner pushed to the phone, pinned to a big core; energy from the
# battery's current and voltage sampled while it runs. Not run in this build (no phone); parsing is unit-tested.
# --------------------------------------------------------------------------------------------------------------------

_RUNNER_TOTAL = re.compile(r"Model executed successfully\s+(\d+)\s+time\(s\)\s+in\s+([0-9.]+)\s*ms")
_BATTERY_SAMPLE = re.compile(r"^\s*(-?\d+)\s+(-?\d+)\s*$")


def parse_runner_output(text: str) -> tuple[int, float]:
    """``(executions, total_ms)`` from ExecuTorch ``executor_runner`` output
    (its log line ``Model executed successfully N time(s) in X ms.``)."""
    matches = _RUNNER_TOTAL.findall(text)
    if not matches:
        raise ValueError("no 'Model executed successfully N time(s) in X ms' line in the runner output:\n"
                         + text[-500:])
    n, total = matches[-1]
    return int(n), float(total)


def parse_battery_samples(text: str) -> np.ndarray:
    """Rows ``(t_s, current_uA, voltage_uV)`` from the sampler's ``<uptime> <current_now> <voltage_now>`` lines.

    ``current_now`` is signed differently across vendors (negative while discharging on many); the magnitude is kept.
    """
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and all(re.fullmatch(r"-?[0-9.]+", p) for p in parts):
            rows.append((float(parts[0]), abs(float(parts[1])), float(parts[2])))
    if len(rows) < 2:
        raise ValueError(f"need at least two battery samples, parsed {len(rows)} from:\n{text[-300:]}")
    return np.asarray(rows)


def battery_energy_mj(samples: np.ndarray) -> tuple[float, float]:
    """``(energy_mJ, mean_power_mW)`` over the samples: trapezoid integral of current x voltage over time."""
    t, i_ua, v_uv = samples[:, 0], samples[:, 1], samples[:, 2]
    p_mw = i_ua * v_uv * 1e-9  # uA * uV = pW; 1e-9 -> mW
    energy_mj = float(np.sum(0.5 * (p_mw[1:] + p_mw[:-1]) * np.diff(t)))  # mW * s = mJ
    return energy_mj, float(p_mw.mean())


def parse_dumpsys_battery(text: str) -> dict[str, Any]:
    """Key facts from ``adb shell dumpsys battery``: whether it is charging (USB/AC power invalidates energy),
    level (%), voltage (mV), temperature (0.1 degC)."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, value = (s.strip() for s in line.split(":", 1))
        if key in ("AC powered", "USB powered", "Wireless powered"):
            out[key.split()[0].lower() + "_powered"] = value == "true"
        elif key in ("level", "voltage", "temperature", "status"):
            with contextlib.suppress(ValueError):
                out[key] = int(value)
    if "level" not in out:
        raise ValueError("not a 'dumpsys battery' output (no 'level:' line)")
    out["on_external_power"] = any(out.get(k, False) for k in ("ac_powered", "usb_powered", "wireless_powered"))
    return out


@dataclass
class AdbPhone(Device):
    """An Android phone over ``adb`` running ExecuTorch's ``executor_runner`` (build it for arm64 from ExecuTorch's
    examples/portable/executor_runner with XNNPACK) pinned to one big core with ``taskset``.

    ``run`` executes an argv list and returns stdout; tests inject a fake that replays recorded text.
    """

    runner_binary: str = "executor_runner"  # local path of the arm64 binary
    serial: str | None = None
    adb: str = "adb"
    cpu_mask: str = "80"  # hex mask for taskset: core 7, a big core on most octa-core phones
    threads: int = 1
    executions: int = 100
    sample_period_s: float = 0.05
    remote_dir: str = "/data/local/tmp/ersam"
    battery_path: str = "/sys/class/power_supply/battery"
    allow_external_power: bool = False
    run: Callable[[list[str]], str] | None = None
    name: str = "adb-phone"

    def _adb(self, *args: str) -> list[str]:
        return [self.adb, *(["-s", self.serial] if self.serial else []), *args]

    def push_commands(self, pte_path: str) -> list[list[str]]:
        remote_runner = f"{self.remote_dir}/executor_runner"
        return [self._adb("shell", "mkdir", "-p", self.remote_dir),
                self._adb("push", self.runner_binary, remote_runner),
                self._adb("shell", "chmod", "755", remote_runner),
                self._adb("push", str(pte_path), f"{self.remote_dir}/{Path(pte_path).name}")]

    def run_command(self, pte_path: str) -> list[str]:
        """One shell command: sample battery current/voltage in the background while the runner executes."""
        d, model = self.remote_dir, f"{self.remote_dir}/{Path(pte_path).name}"
        b = self.battery_path
        sampler = (f"while [ -f {d}/running ]; do echo $(cut -d' ' -f1 /proc/uptime) "
                   f"$(cat {b}/current_now) $(cat {b}/voltage_now); sleep {self.sample_period_s}; done")
        runner = (f"taskset {self.cpu_mask} {d}/executor_runner --model_path {shlex.quote(model)} "
                  f"--num_executions {self.executions} --cpu_threads {self.threads}")
        script = f"touch {d}/running; ({sampler}) > {d}/battery.txt & {runner}; rm -f {d}/running; wait"
        return self._adb("shell", script)

    def _exec(self, argv: list[str]) -> str:
        if self.run is not None:
            return self.run(argv)
        try:
            return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=600).stdout
        except FileNotFoundError as e:
            raise RuntimeError(f"adb not found ({self.adb!r}); install Android platform-tools or pass adb=") from e

    def metadata(self) -> dict[str, Any]:
        return {"device": self.name, "kind": "adb", "serial": self.serial, "cpu_mask": self.cpu_mask,
                "threads": self.threads, "backend": "executorch-xnnpack", "executions": self.executions}

    def measure(self, module: nn.Module | str | os.PathLike | bytes, input_shape: Sequence[int]) -> LatencyStats:
        with tempfile.TemporaryDirectory() as tmp:
            pte = Path(tmp) / "model.pte"
            if isinstance(module, nn.Module):
                with torch.no_grad():
                    pte.write_bytes(export_executorch(module, torch.randn(*input_shape)))
            elif isinstance(module, bytes):
                pte.write_bytes(module)
            else:
                pte = Path(module)
            battery = parse_dumpsys_battery(self._exec(self._adb("shell", "dumpsys", "battery")))
            if battery["on_external_power"] and not self.allow_external_power:
                raise RuntimeError("the phone is on USB/AC power, so the battery current does not show what the "
                                   "model draws: connect adb over Wi-Fi (adb tcpip) and unplug the cable")
            for argv in self.push_commands(str(pte)):
                self._exec(argv)
            n, total_ms = parse_runner_output(self._exec(self.run_command(str(pte))))
            samples = parse_battery_samples(self._exec(self._adb("shell", "cat", f"{self.remote_dir}/battery.txt")))
        energy, power_mw = battery_energy_mj(samples)
        meta = self.metadata() | {"input_shape": list(input_shape), "battery": battery, "mean_power_mw": power_mw,
                                  "note": "executor_runner reports the total only: var is unknown (0)"}
        mean = total_ms / n
        return LatencyStats(count=n, mean=mean, var=0.0, median=mean, p90=mean, min=mean,
                            energy_mj=energy / n, metadata=meta)


# --------------------------------------------------------------------------------------------------------------------
# Imported profile: a table measured elsewhere (a phone, another laptop) that answers measure() by lookup.
# --------------------------------------------------------------------------------------------------------------------

def module_key(module: nn.Module, input_shape: Sequence[int]) -> str:
    """Key of a measured module: its layer key when it is one supported layer, else a hash of its structure."""
    key = layer_key_of(module, input_shape)
    if key is not None:
        return key
    digest = hashlib.sha1((repr(module) + str(tuple(input_shape))).encode()).hexdigest()[:16]
    return f"model|{digest}"


class ImportedProfile(Device):
    """Latencies measured elsewhere, loaded from CSV or JSON with columns ``key, count, mean, var, median, p90``
    (optionally ``min``, ``energy_mj``) and a metadata record; ``measure`` looks the module's key up.

    The file is data from elsewhere, so it is read as data only (CSV or JSON, never a pickle) and checked: unique
    keys, counts >= 1, latencies and variances finite and non-negative (energy may be missing). A bad file raises
    :class:`~ersam_lib.core.io.ArtifactError` naming it and the first offending keys.
    """

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"profile {path} does not exist")
        try:
            if path.suffix == ".csv":
                table = pd.read_csv(path)
                meta_path = path.with_suffix(".meta.json")
                self.meta = read_json(meta_path) if meta_path.exists() else {}
            elif path.suffix == ".json":
                doc = read_json(path)
                table, self.meta = pd.DataFrame(doc["entries"]), doc.get("metadata", {})
            else:
                raise ValueError(f"profile {path} must be .csv or .json")
        except (pd.errors.ParserError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise ArtifactError(f"profile {path} is not a readable table ({type(e).__name__}: {e})") from None
        self.table = _checked_profile(table, path).drop_duplicates("key").set_index("key")
        self.name = f"imported-{self.meta.get('device', path.stem)}"
        self.power = None

    def metadata(self) -> dict[str, Any]:
        return {"device": self.name, "kind": "imported"} | self.meta

    def measure(self, module: nn.Module | str | os.PathLike | bytes, input_shape: Sequence[int]) -> LatencyStats:
        if not isinstance(module, nn.Module):
            raise TypeError("an imported profile looks up nn.Modules by their key")
        key = module_key(module, input_shape)
        if key not in self.table.index:
            raise KeyError(f"{key!r} was not measured in the imported profile {self.name}")
        row = self.table.loc[key]
        energy = row.get("energy_mj")
        return LatencyStats(count=int(row["count"]), mean=float(row["mean"]), var=float(row["var"]),
                            median=float(row["median"]), p90=float(row.get("p90", row["median"])),
                            min=float(row.get("min", row["median"])),
                            energy_mj=None if energy is None or pd.isna(energy) else float(energy),
                            metadata=self.metadata() | {"input_shape": list(input_shape)})


def _checked_profile(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    missing = {"key", "count", "mean", "var", "median"} - set(table.columns)
    if missing:
        raise ArtifactError(f"profile {path} lacks columns {sorted(missing)}")
    stats = [c for c in ("count", "mean", "var", "median", "p90", "min", "energy_mj") if c in table]
    # One key, one measurement: a key listed twice is ambiguous unless the rows agree (one layer, two op labels).
    dup = table.drop_duplicates(["key", *stats])["key"]
    dup = dup[dup.duplicated()].astype(str).tolist()
    if dup:
        raise ArtifactError(f"profile {path} lists keys more than once with different measurements: {dup[:3]}")
    for col in stats:
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)
        bad = ~(np.isfinite(values) & (values >= (1 if col == "count" else 0)))
        if col == "energy_mj":
            bad &= ~np.isnan(values)  # energy is optional per entry: missing, not wrong
        if bad.any():
            keys = table["key"][bad].astype(str).tolist()[:3]
            raise ArtifactError(f"profile {path}: column {col!r} must hold finite numbers >= "
                                f"{1 if col == 'count' else 0}; bad for keys {keys}")
    return table


DEVICES: dict[str, type[Device]] = {"host": HostCPU, "adb": AdbPhone, "imported": ImportedProfile}


def get_device(name: str, **kwargs: Any) -> Device:
    """A device by name: ``host`` (``backend=``, ``threads=``), ``adb`` (``serial=``...), ``imported`` (``path=``)."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")
    return DEVICES[name](**kwargs)
