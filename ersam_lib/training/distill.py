"""Uncertainty-gated knowledge distillation (chapter 4, used by the supernet trainer,
:mod:`ersam_lib.training.train`).

ERSAM's observation: the big model beats the small one exactly where the small one is wrong *and* uncertain. So the
expensive teacher is asked only about the samples on which the student is uncertain:

- :func:`uncertainty` scores each sample from the student's logits, in ``[0, 1]``: normalised entropy
  ``H(p) / log K`` or one minus the top-2 margin ``1 - (p_(1) - p_(2))``;
- :func:`select_uncertain` keeps the samples whose score exceeds the threshold ``tau``;
- :class:`SelectiveTeacher` wraps a frozen teacher, runs it **only** on the selected rows (caching them for the rest
  of the training step) and counts what it cost: samples seen, samples queried, forward passes, FLOPs saved;
- :func:`kd_loss` is the temperature-scaled KL divergence of Hinton et al. (2015), per sample;
- :func:`cache_teacher_logits` runs the teacher once over a fixed training set (offline distillation): then every
  epoch reuses those targets, and the teacher costs one forward pass per training sample in all.

The gate is applied per trained subnet, on that subnet's own (detached) logits: the forward pass that the loss needs
anyway gives the uncertainty for free, and each subnet asks the teacher about *its* hard samples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from torch.utils.data import DataLoader, Dataset

from ..core.progress import progress
from ..measure.complexity import macs_per_sample

__all__ = [
    "DistillConfig", "LogitsDataset", "SelectiveTeacher", "cache_teacher_logits", "kd_loss", "select_uncertain",
    "teacher_flops_per_sample", "teacher_input", "uncertainty",
]

Mode = Literal["none", "full", "offline", "selective"]
UncertaintyKind = Literal["entropy", "margin"]
GateOn = Literal["student", "largest"]
MODES: tuple[str, ...] = ("none", "full", "offline", "selective")
KINDS: tuple[str, ...] = ("entropy", "margin")
GATES: tuple[str, ...] = ("student", "largest")


@dataclass(frozen=True)
class DistillConfig:
    """How the teacher takes part in supernet training (chapter 4).

    ``mode``: ``"none"`` (in-place distillation from the largest subnet only, BigNAS), ``"full"`` (teacher on every
    sample, every epoch), ``"offline"`` (the same targets as full, computed once per training sample before training
    and reused every epoch: the cheapest way to distil on a fixed training set) or ``"selective"`` (teacher only
    where the student's uncertainty exceeds ``tau``).
    ``alpha`` weighs the teacher's KD term for the largest subnet against its label loss.
    ``gate_on``: whose uncertainty opens the gate: ``"student"`` (each trained subnet, on its own logits) or
    ``"largest"`` (the largest subnet once per step; its mask then holds for every subnet of the sandwich, i.e. the
    teacher stands in for the in-place teacher exactly where the in-place teacher is unsure).
    """

    mode: Mode = "selective"
    tau: float = 0.5
    kind: UncertaintyKind = "entropy"
    temperature: float = 1.0
    alpha: float = 1.0
    gate_on: GateOn = "student"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown distillation mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown uncertainty {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.gate_on not in GATES:
            raise ValueError(f"unknown gate_on {self.gate_on!r}; expected one of {', '.join(GATES)}")
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must lie in [0, 1] (uncertainties are normalised), got {self.tau}")
        if self.temperature <= 0 or self.alpha < 0:
            raise ValueError(f"need temperature > 0 and alpha >= 0, got {self.temperature}, {self.alpha}")

    @property
    def uses_teacher(self) -> bool:
        return self.mode != "none"

    def label(self) -> str:
        """Short name for tables and plots (``selective τ=0.5``)."""
        if self.mode != "selective":
            return self.mode
        return f"selective τ={self.tau:g}" + (" (largest gates)" if self.gate_on == "largest" else "")

    def to_dict(self) -> dict:
        return asdict(self)


def uncertainty(logits: torch.Tensor, kind: UncertaintyKind = "entropy") -> torch.Tensor:
    """Per-sample uncertainty in ``[0, 1]`` from logits ``(B, K)``: 0 = certain, 1 = uniform (chapter 4)."""
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"expected logits of shape (B, K>=2), got {tuple(logits.shape)}")
    p = logits.detach().float().softmax(dim=1)
    if kind == "entropy":
        ent = -(p * p.clamp_min(1e-12).log()).sum(dim=1)
        return (ent / math.log(logits.shape[1])).clamp(0.0, 1.0)
    if kind == "margin":
        top2 = p.topk(2, dim=1).values
        return 1.0 - (top2[:, 0] - top2[:, 1])
    raise ValueError(f"unknown uncertainty {kind!r}; expected one of {', '.join(KINDS)}")


def select_uncertain(logits: torch.Tensor, cfg: DistillConfig) -> torch.Tensor:
    """Boolean mask ``(B,)`` of the samples the teacher should see under ``cfg`` (chapter 4)."""
    b = logits.shape[0]
    if cfg.mode == "none":
        return torch.zeros(b, dtype=torch.bool, device=logits.device)
    if cfg.mode in ("full", "offline"):
        return torch.ones(b, dtype=torch.bool, device=logits.device)
    return uncertainty(logits, cfg.kind) > cfg.tau


def kd_loss(student_logits: torch.Tensor, target_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-sample distillation loss ``T^2 KL(softmax(t/T) || softmax(s/T))``, shape ``(B,)`` (chapter 4).

    The targets are detached: gradients flow only into the student.
    """
    if student_logits.shape != target_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and target {tuple(target_logits.shape)} differ")
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(target_logits.detach().float() / t, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1) * t * t


def teacher_input(item: tuple) -> torch.Tensor:
    """The teacher's input in a training item ``(x, y)`` (the students' features) or ``(x, y, teacher_x)``."""
    return item[2] if len(item) > 2 else item[0]


class LogitsDataset(Dataset):
    """Items ``(x, y, teacher_logits)``: a training set with the teacher's outputs cached beside it (chapter 4)."""

    def __init__(self, ds: Dataset, logits: torch.Tensor):
        if len(ds) != len(logits):  # type: ignore[arg-type]
            raise ValueError(f"{len(logits)} cached teacher outputs for {len(ds)} samples")  # type: ignore[arg-type]
        self.ds, self.logits = ds, logits

    def __len__(self) -> int:
        return len(self.logits)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        item = self.ds[i]
        return item[0], item[1], self.logits[i]


@torch.no_grad()
def cache_teacher_logits(teacher: nn.Module, ds: Dataset, batch_size: int = 64,
                         device: torch.device | str = "cpu") -> tuple[LogitsDataset, int]:
    """Offline distillation's one teacher pass over a fixed training set: ``(dataset with the logits, passes)``.

    The teacher is frozen and in eval mode, so its outputs on an unchanged sample are the same every epoch: caching
    them gives full distillation's targets at one teacher pass per sample instead of one per sample and epoch.
    """
    teacher.eval()
    parts, passes = [], 0
    for batch in progress(DataLoader(ds, batch_size=batch_size), desc="teacher outputs (offline)", leave=False):
        parts.append(teacher(teacher_input(batch).to(device)).float().cpu())
        passes += 1
    return LogitsDataset(ds, torch.cat(parts)), passes


def teacher_flops_per_sample(teacher: nn.Module, example: torch.Tensor) -> int:
    """FLOPs (2 x multiply-accumulates) of one teacher forward pass on one sample (chapter 4's cost accounting)."""
    return 2 * macs_per_sample(teacher, example)


class SelectiveTeacher:
    """A frozen teacher that answers only for the samples a gate selected, and counts what that cost (chapter 4).

    Per training step call :meth:`begin_step` with the teacher's inputs for the batch, then :meth:`targets` once per
    trained subnet with that subnet's logits: the teacher runs on the newly selected rows only, and rows it has seen
    in this step are reused rather than recomputed.
    """

    def __init__(self, teacher: nn.Module | None, cfg: DistillConfig, flops_per_sample: int | None = None):
        if cfg.uses_teacher and teacher is None:
            raise ValueError(f"distillation mode {cfg.mode!r} needs a teacher; pass one or use mode='none'")
        self.teacher = teacher.eval() if teacher is not None else None
        if self.teacher is not None:
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.cfg = cfg
        self.flops_per_sample = flops_per_sample
        self.samples_seen = 0
        self.samples_queried = 0
        self.forward_passes = 0
        self.cached_samples = 0  # offline mode: samples the teacher ran on once, before training
        self.cache_s = 0.0  # offline mode: the wall time of that pass
        self.lookups = 0  # offline mode: steps that read the cache, i.e. the teacher passes full distillation makes
        self._inputs: torch.Tensor | None = None
        self._logits: torch.Tensor | None = None
        self._have: torch.Tensor | None = None

    def begin_step(self, teacher_inputs: torch.Tensor) -> None:
        """Start a training step on a batch whose teacher inputs are ``teacher_inputs`` (first dim = batch)."""
        self._finish_step()
        self._inputs = teacher_inputs
        self._have = torch.zeros(teacher_inputs.shape[0], dtype=torch.bool)
        self._logits = None
        self.samples_seen += teacher_inputs.shape[0]

    def targets(self, student_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(mask, teacher_logits)``: the gate's mask ``(B,)`` and teacher logits ``(B, K)`` valid where ``mask``.

        Teacher logits are ``None`` when no sample was selected.
        """
        if self._inputs is None or self._have is None:
            raise RuntimeError("call begin_step(teacher_inputs) before targets()")
        mask = select_uncertain(student_logits, self.cfg).cpu()
        if not mask.any():
            return mask, None
        need = mask & ~self._have
        if need.any():
            self._query(need, student_logits.shape[1])
        assert self._logits is not None
        return mask, self._logits.to(student_logits.device)

    def _query(self, need: torch.Tensor, n_classes: int) -> None:
        assert self.teacher is not None and self._inputs is not None and self._have is not None
        with torch.no_grad():
            out = self.teacher(self._inputs[need.to(self._inputs.device)]).float()
        if out.shape[1] != n_classes:
            raise ValueError(f"teacher has {out.shape[1]} classes, student {n_classes}")
        if self._logits is None:
            self._logits = torch.zeros(self._inputs.shape[0], n_classes)
        self._logits[need] = out.cpu()
        self._have |= need
        if self.cfg.mode == "offline":  # a lookup in the cache, not a teacher pass
            self.lookups += 1
        else:
            self.forward_passes += 1

    def cached(self, samples: int, passes: int, seconds: float = 0.0) -> None:
        """Record offline distillation's one teacher pass over ``samples`` training samples in ``passes`` batches,
        which took ``seconds``."""
        self.cached_samples, self.forward_passes, self.cache_s = samples, passes, seconds

    def _finish_step(self) -> None:
        if self._have is not None and self.cfg.mode != "offline":
            self.samples_queried += int(self._have.sum())
        self._inputs = self._logits = self._have = None

    def stats(self) -> dict[str, float]:
        """Query rate, teacher forward passes, samples queried and the share of teacher compute saved.

        Teacher compute is counted the same way for every mode: samples the teacher ran on, per training sample seen
        (offline distillation: the cached samples, once, whatever the number of epochs).
        """
        self._finish_step()
        queried = self.cached_samples if self.cfg.mode == "offline" else self.samples_queried
        rate = queried / self.samples_seen if self.samples_seen else 0.0
        out = {
            "samples_seen": self.samples_seen,
            "teacher_samples": queried,
            "teacher_forward_passes": self.forward_passes,
            "query_rate": rate,
            "teacher_compute_saved": 1.0 - rate if self.cfg.uses_teacher else 1.0,
        }
        if self.flops_per_sample is not None:
            out["teacher_gflops"] = queried * self.flops_per_sample / 1e9
            out["teacher_gflops_saved"] = (self.samples_seen - queried) * self.flops_per_sample / 1e9
        if self.cfg.mode == "offline":
            out |= {"teacher_cache_s": self.cache_s, "cache_lookups": self.lookups}
        return out

    def state_dict(self) -> dict[str, float]:
        self._finish_step()
        return {"samples_seen": self.samples_seen, "samples_queried": self.samples_queried,
                "forward_passes": self.forward_passes, "cached_samples": self.cached_samples,
                "cache_s": self.cache_s, "lookups": self.lookups}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.samples_seen = int(state["samples_seen"])
        self.samples_queried = int(state["samples_queried"])
        self.forward_passes = int(state["forward_passes"])
        self.cached_samples = int(state.get("cached_samples", 0))
        self.cache_s = float(state.get("cache_s", 0.0))
        self.lookups = int(state.get("lookups", 0))
