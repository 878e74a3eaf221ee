"""What chapter 5 scores an architecture with: an expensive accuracy and cheap costs, each cached by its id.

In the book, the accuracy is the supernet's inherited accuracy after BN recalibration on the validation split and the
costs come from chapter 2's cost model (:func:`predicted_costs`, energy calibrated by
:func:`ersam_lib.experiments.search.setup.run_search_setup`); :func:`synthetic_objectives` is a cheap stand-in with the
same interface (tests, timing the search itself).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...core.io import atomic_write_json, read_json
from ...measure.complexity import count_params
from ...measure.costmodel import CostEstimate, CostModel
from ...models.space import Arch, SearchSpace, build_model

__all__ = ["AccuracyFn", "CostFn", "Objectives", "REQUIRED_COSTS", "costs_from_estimate", "predicted_costs",
           "static_model", "synthetic_objectives"]

REQUIRED_COSTS: tuple[str, ...] = ("latency_ms", "energy_mj", "memory_kb")

AccuracyFn = Callable[[Arch], Mapping[str, float]]
CostFn = Callable[[Arch], Mapping[str, float]]


def _floats(d: Mapping[str, Any], required: Sequence[str], what: str) -> dict[str, float]:
    missing = [k for k in required if k not in d]
    if missing:
        raise ValueError(f"the {what} function must return {list(required)}; missing {missing} in {dict(d)!r}")
    return {str(k): float(v) for k, v in d.items() if isinstance(v, (int, float, np.number))}


class Objectives:
    """An accuracy function and a cost function of an architecture, each cached by ``arch.arch_id`` (chapter 5).

    ``accuracy_fn(arch) -> {"acc", "mae", ...}`` is the expensive one; ``cost_fn(arch) -> {"latency_ms",
    "energy_mj", "memory_kb", ...}`` the cheap one (floats; extra keys are kept, e.g. ``params``). ``counts`` holds
    the cache hits and misses. With ``cache_path`` the results are kept in that JSON file, rewritten atomically
    after every new accuracy, and read back on construction; ``tag`` names what the functions measure (supernet
    checkpoint, cost model, split): a cache file written under another tag is refused rather than silently reused.
    """

    def __init__(self, accuracy_fn: AccuracyFn, cost_fn: CostFn, cache_path: str | os.PathLike | None = None,
                 tag: str = ""):
        self.accuracy_fn, self.cost_fn, self.tag = accuracy_fn, cost_fn, tag
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.counts = {"acc_hits": 0, "acc_misses": 0, "cost_hits": 0, "cost_misses": 0}
        self._acc: dict[str, dict[str, float]] = {}
        self._cost: dict[str, dict[str, float]] = {}
        if self.cache_path is not None and self.cache_path.exists():
            self._load(self.cache_path)

    def _load(self, path: Path) -> None:
        doc = read_json(path)
        if not isinstance(doc, dict) or not {"tag", "accuracy", "cost"} <= set(doc):
            raise ValueError(f"{path} is not an objectives cache (want keys tag, accuracy, cost)")
        if doc["tag"] != self.tag:
            raise ValueError(f"{path} was written for tag {doc['tag']!r}, not {self.tag!r}: delete it or pass "
                             f"another cache_path")
        self._acc, self._cost = dict(doc["accuracy"]), dict(doc["cost"])

    def __len__(self) -> int:
        """Number of architectures whose accuracy is known."""
        return len(self._acc)

    def seconds_per_score(self) -> float:
        """Mean wall time of one accuracy evaluation, over every architecture scored (this run or a cached one)."""
        times = [v["eval_s"] for v in self._acc.values() if "eval_s" in v]
        return float(np.mean(times)) if times else float("nan")

    def cost(self, arch: Arch) -> dict[str, float]:
        """The cheap costs of ``arch`` (cached)."""
        key = arch.arch_id
        if key in self._cost:
            self.counts["cost_hits"] += 1
        else:
            self.counts["cost_misses"] += 1
            self._cost[key] = _floats(self.cost_fn(arch), REQUIRED_COSTS, "cost")
        return dict(self._cost[key])

    def accuracy(self, arch: Arch) -> dict[str, float]:
        """The expensive accuracy and MAE of ``arch`` (cached; a new one is written to ``cache_path``)."""
        key = arch.arch_id
        if key in self._acc:
            self.counts["acc_hits"] += 1
        else:
            self.counts["acc_misses"] += 1
            t0 = time.perf_counter()
            scores = _floats(self.accuracy_fn(arch), ("acc", "mae"), "accuracy")
            self._acc[key] = scores | {"eval_s": time.perf_counter() - t0}  # what one score cost, kept with it
            self.save()
        return dict(self._acc[key])

    def evaluate(self, arch: Arch) -> dict[str, float]:
        """Costs and accuracy together (ask :meth:`cost` first when a budget may reject ``arch``)."""
        return self.cost(arch) | self.accuracy(arch)

    def save(self) -> Path | None:
        """Write the cache file now (no-op without ``cache_path``)."""
        if self.cache_path is None:
            return None
        return atomic_write_json(self.cache_path, {"tag": self.tag, "accuracy": self._acc, "cost": self._cost})


def static_model(space: SearchSpace, arch: Arch) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):  # fresh weights must not move the caller's random stream
        return build_model(arch, space.n_features, space.n_classes, space.attn_dim)


def costs_from_estimate(est: CostEstimate) -> dict[str, float]:
    """Chapter 2's :class:`~ersam_lib.measure.costmodel.CostEstimate` as the search's cost dict.

    Memory in kB (1000 bytes): ``memory_kb`` = int8 weights (one byte per parameter; the reward's M),
    ``memory_kb_float`` = float32 weights; ``peak_act_kb_float``/``_int8`` = the largest layer's input + output.
    Parameters include BatchNorm's, which an int8 export folds into the convolutions (a slight overestimate).
    """
    return {"latency_ms": est.latency_ms, "energy_mj": est.energy_mj, "params": float(est.params),
            "macs": float(est.macs), "memory_kb": est.params / 1000.0, "memory_kb_float": 4 * est.params / 1000.0,
            "peak_act_kb_float": est.peak_activation_bytes / 1000.0,
            "peak_act_kb_int8": est.peak_activation_bytes / 4 / 1000.0}


def predicted_costs(cost_model: CostModel, space: SearchSpace) -> CostFn:
    """Cost function of chapter 5: chapter 2's cost model on the static network of ``arch``, one segment."""
    shape = (1, space.n_features, space.n_frames)
    return lambda arch: costs_from_estimate(cost_model.predict(static_model(space, arch), shape))


def _weights(space: SearchSpace, arch: Arch) -> int:
    return count_params(static_model(space, arch))


def synthetic_objectives(space: SearchSpace, noise: float = 0.03, cache_path: str | os.PathLike | None = None
                         ) -> Objectives:
    """Cheap, deterministic stand-in objectives with the real interface (tests, timing the search's own cost).

    Accuracy rises smoothly with MACs (0.3 to about 0.85) plus a fixed offset of up to ``noise`` drawn from the
    architecture's id; energy and latency are proportional to MACs, memory to the weight count, scaled so that the
    space's largest architecture has 2.5 mJ and 120 kB: the space straddles Speckhard's thresholds (1.25 mJ, 60 kB).
    """
    largest = space.largest()
    mac_scale, weight_scale = space.macs(largest), _weights(space, largest)

    def offset(arch: Arch) -> float:
        return noise * (2 * int(hashlib.sha1(arch.arch_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF - 1)

    def accuracy(arch: Arch) -> dict[str, float]:
        acc = 0.3 + 0.55 * (1 - math.exp(-3 * space.macs(arch) / mac_scale)) + offset(arch)
        acc = min(max(acc, 0.0), 1.0)
        return {"acc": acc, "mae": 1.5 * (1 - acc)}

    def cost(arch: Arch) -> dict[str, float]:
        rel = space.macs(arch) / mac_scale
        return {"latency_ms": 2.0 * rel, "energy_mj": 2.5 * rel, "memory_kb": 120.0 * _weights(space, arch)
                / weight_scale, "macs": float(space.macs(arch))}

    space_id = hashlib.sha1(json.dumps(space.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    return Objectives(accuracy, cost, cache_path, tag=f"synthetic space={space_id} noise={noise}")

