"""Training the weight-sharing supernet with the sandwich rule and uncertainty-gated distillation (chapter 4).

One optimiser step (:func:`sandwich_step`), BigNAS/AttentiveNAS style:

1. the **largest** subnet learns the labels (cross-entropy), plus the teacher's soft targets on the samples where
   it is uncertain (selective distillation, :mod:`ersam_lib.training.distill`); its logits, detached, become soft
   targets;
2. the **smallest** and ``n_random`` random subnets learn those soft targets (in-place distillation), except on the
   samples where *they* are uncertain and the teacher is in play: there the teacher's logits replace the largest's;
3. gradients of all subnets accumulate, are clipped, and one optimiser step follows.

:func:`train_supernet` loops over epochs with a checkpoint after each (written atomically, so a kill leaves the
previous one intact) and resumes from it to the same state: data order, subnet draws and dropout are seeded per
epoch from ``(seed, epoch)``. The checkpoint holds tensors and plain values only (loaded with
``weights_only=True``, never running code) and records its provenance (the data's content key, the teacher's
weights hash): a checkpoint made from other inputs, or a damaged one, is set aside and training starts afresh.
Under ``torchrun`` it runs DistributedDataParallel on gloo (CPU) or NCCL (GPU); the command line that trains one
variant of chapter 4's ablation that way is ``ersam train`` (:func:`ersam_lib.experiments.ablation.train_variant`)::

    torchrun --nproc_per_node 2 -m ersam_lib train --run-dir runs/tutorial --scale tutorial --mode selective
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from ..core.io import ArtifactError, atomic_torch_save, atomic_write_json, torch_load
from ..core.progress import progress
from ..core.repro import pick_device
from ..core.rundir import CHECKPOINT, HISTORY
from ..core.scales import sizes
from ..measure.data import subset
from .distill import (DistillConfig, SelectiveTeacher, cache_teacher_logits, kd_loss, teacher_flops_per_sample,
                      teacher_input)

__all__ = [
    "TrainConfig", "TrainResult", "dist_info", "init_distributed", "sandwich_archs", "sandwich_step",
    "train_supernet",
]


@dataclass(frozen=True)
class TrainConfig:
    """Supernet training knobs (chapter 4). ``n_random``: random subnets per step besides largest and smallest."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    n_random: int = 2
    grad_clip: float = 5.0
    max_train_samples: int | None = None
    seed: int = 0
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.n_random < 0:
            raise ValueError(f"need epochs >= 1, batch_size >= 1, n_random >= 0; got {self}")
        if self.lr <= 0 or self.grad_clip <= 0:
            raise ValueError(f"need lr > 0 and grad_clip > 0; got lr={self.lr}, grad_clip={self.grad_clip}")

    @classmethod
    def for_scale(cls, scale: str, **overrides: Any) -> TrainConfig:
        """Sizes per scale; ``tutorial`` fits the chapter 4 ablation (5 trainings) in about half an hour on 2 cores."""
        return cls(**(sizes("train", scale) | overrides))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["distill"] = DistillConfig(**d.get("distill", {}))
        return cls(**d)


@dataclass
class TrainResult:
    """What :func:`train_supernet` returns: per-epoch history, teacher statistics and the total wall time."""

    history: list[dict[str, float]]
    teacher: dict[str, float]
    wall_s: float
    resumed_from: int


# --------------------------------------------------------------------------------------------- distributed
def dist_info() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside ``torch.distributed``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed() -> bool:
    """Join the process group ``torchrun`` describes in the environment (gloo on CPU). False when not launched."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return torch.distributed.is_available() and torch.distributed.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend=backend)
    return True


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------------------------- one step
def sandwich_step(model: nn.Module, archs: Sequence[Any], batch: Sequence[torch.Tensor],
                  optimizer: torch.optim.Optimizer, teacher: SelectiveTeacher, cfg: TrainConfig) -> dict[str, float]:
    """One sandwich-rule step on ``batch = (x, y[, teacher_x])``; ``archs[0]`` is the largest subnet (chapter 4)."""
    x, y = batch[0], batch[1]
    teacher.begin_step(batch[2] if len(batch) > 2 else x)
    net, temp, alpha = _unwrap(model), cfg.distill.temperature, cfg.distill.alpha
    optimizer.zero_grad(set_to_none=True)
    soft: torch.Tensor | None = None
    out: dict[str, float] = {}
    for i, arch in enumerate(archs):
        net.set_active_subnet(arch)
        logits = model(x)
        if i == 0 or cfg.distill.gate_on == "student":
            mask, t_logits = teacher.targets(logits)
        if soft is None:  # the largest subnet: labels (+ teacher where it is uncertain)
            loss = F.cross_entropy(logits, y)
            if t_logits is not None:
                loss = loss + alpha * (kd_loss(logits, t_logits, temp) * mask.to(logits.device)).mean()
            soft = logits.detach()
            out["loss_largest"] = float(loss.detach())
            out["acc_largest"] = float((logits.argmax(1) == y).float().mean())
        else:  # in-place distillation, the teacher replacing the largest where this subnet is uncertain
            target = soft if t_logits is None else torch.where(mask.to(soft.device)[:, None], t_logits, soft)
            loss = kd_loss(logits, target, temp).mean()
            out[f"loss_sub{i}"] = float(loss.detach())
        loss.backward()
    out["grad_norm"] = float(nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
    optimizer.step()
    return out


def sandwich_archs(space: Any, rng: random.Random, n_random: int) -> list[Any]:
    """``[largest, smallest, n_random random archs]`` drawn from ``space`` with ``rng`` (chapter 4)."""
    return [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(n_random)]


# --------------------------------------------------------------------------------------------- the loop
def _loader(ds: Dataset, cfg: TrainConfig, epoch: int) -> DataLoader:
    rank, world = dist_info()
    if world > 1:
        sampler: Any = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
    return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=len(ds) > cfg.batch_size)


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int):
    total, warm = cfg.epochs * steps_per_epoch, max(1, int(cfg.warmup_epochs * steps_per_epoch))

    def f(step: int) -> float:  # linear warm-up, then cosine to zero
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return f


def train_supernet(supernet: nn.Module, space: Any, train_ds: Dataset, cfg: TrainConfig, ckpt_dir: str | os.PathLike,
                   teacher: nn.Module | None = None, stop_after_epoch: int | None = None,
                   device: str | None = "auto", provenance: dict[str, Any] | None = None) -> TrainResult:
    """Train ``supernet`` over ``space`` with the sandwich rule; checkpoint each epoch into ``ckpt_dir``; resume.

    Introduced in chapter 4. ``train_ds`` yields ``(x, y)`` or ``(x, y, teacher_x)``. ``stop_after_epoch`` ends the
    run early (as a kill would, but cleanly) to demonstrate and test resuming. The supernet and the teacher are
    moved to ``device`` (:func:`~ersam_lib.core.repro.pick_device`: the GPU when there is one) and stay there.
    ``provenance`` (plain values: what the data and the teacher are) is stored in each checkpoint; one with
    another provenance is not resumed from.
    """
    rank, world = dist_info()
    dev = pick_device(device)
    ckpt_dir = Path(ckpt_dir)
    train_ds = subset(train_ds, cfg.max_train_samples, cfg.seed)
    flops = teacher_flops_per_sample(teacher, teacher_input(train_ds[0])[None]) if teacher is not None else None
    supernet.to(dev)
    if teacher is not None:
        teacher.to(dev)
    model: nn.Module = supernet
    if world > 1:
        model = nn.parallel.DistributedDataParallel(supernet, device_ids=[dev.index] if dev.type == "cuda" else None,
                                                    find_unused_parameters=True)
    steps = len(_loader(train_ds, cfg, 0))
    optimizer = torch.optim.AdamW(supernet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, steps))
    selective = SelectiveTeacher(teacher if cfg.distill.uses_teacher else None, cfg.distill, flops)
    state = _load_checkpoint(ckpt_dir, cfg, supernet, optimizer, scheduler, selective, provenance)
    if teacher is not None and cfg.distill.mode == "offline" and state["epoch"] < cfg.epochs:
        # offline distillation: one teacher pass over the training set; its outputs then ride in each batch
        t_cache = time.perf_counter()
        train_ds, passes = cache_teacher_logits(teacher, train_ds, cfg.batch_size, dev)
        t_cache = time.perf_counter() - t_cache
        selective.teacher = nn.Identity()
        selective.cached(len(train_ds), passes, t_cache)
        state["wall_s"] += t_cache  # the pass is part of what offline distillation costs
    history, wall, start = state["history"], state["wall_s"], state["epoch"]
    for epoch in range(start, cfg.epochs):
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
        t0 = time.perf_counter()
        stats = _train_epoch(model, space, train_ds, cfg, epoch, optimizer, scheduler, selective, dev)
        wall += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "wall_s": wall, **stats, **selective.stats()})
        if rank == 0:
            _save_checkpoint(ckpt_dir, cfg, supernet, optimizer, scheduler, selective, epoch + 1, history, wall,
                             provenance)
    return TrainResult(history, _global_stats(selective), wall, start)


def _global_stats(selective: SelectiveTeacher) -> dict[str, float]:
    """Teacher statistics summed over all ranks (each rank only counts its own shard of the data)."""
    _, world = dist_info()
    if world == 1:
        return selective.stats()
    local = selective.state_dict()
    summed = ("samples_seen", "samples_queried", "forward_passes", "lookups")
    counts = torch.tensor([local[k] for k in summed], dtype=torch.float64)
    torch.distributed.all_reduce(counts)
    total = SelectiveTeacher(None, DistillConfig(mode="none"), selective.flops_per_sample)
    total.cfg = selective.cfg
    total.load_state_dict(dict(zip(summed, map(int, counts)))  # every rank cached the same samples:
                          | {"cached_samples": local["cached_samples"], "cache_s": local["cache_s"]})
    return total.stats()


def _train_epoch(model: nn.Module, space: Any, ds: Dataset, cfg: TrainConfig, epoch: int,
                 optimizer: torch.optim.Optimizer, scheduler: Any, selective: SelectiveTeacher,
                 device: torch.device) -> dict[str, float]:
    torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout and friends: the same after a resume
    rng = random.Random(cfg.seed * 1000 + epoch)  # the same subnets on every rank and after a resume
    model.train()
    sums: dict[str, float] = {}
    loader = _loader(ds, cfg, epoch)
    rank, _ = dist_info()
    quiet = {"disable": True} if rank != 0 else {}  # one bar, from rank 0
    bar = progress(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, **quiet)
    for batch in bar:
        archs = sandwich_archs(space, rng, cfg.n_random)
        batch = [t.to(device, non_blocking=True) for t in batch]
        step = sandwich_step(model, archs, batch, optimizer, selective, cfg)
        scheduler.step()
        for k, v in step.items():
            sums[k] = sums.get(k, 0.0) + v
        bar.set_postfix(loss=f"{step['loss_largest']:.3f}", refresh=False)
    _unwrap(model).set_active_subnet(space.largest())
    return {k: v / max(1, len(loader)) for k, v in sums.items()}


def _save_checkpoint(ckpt_dir: Path, cfg: TrainConfig, supernet: nn.Module, optimizer: Any, scheduler: Any,
                     selective: SelectiveTeacher, epoch: int, history: list, wall: float,
                     provenance: dict[str, Any] | None) -> None:
    atomic_torch_save({
        "epoch": epoch, "config": cfg.to_dict(), "model": supernet.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "teacher_stats": selective.state_dict(), "history": history,
        "wall_s": wall, "provenance": provenance,
    }, ckpt_dir / CHECKPOINT)
    atomic_write_json(ckpt_dir / HISTORY, {"config": cfg.to_dict(), "history": history, "provenance": provenance})


def _load_checkpoint(ckpt_dir: Path, cfg: TrainConfig, supernet: nn.Module, optimizer: Any, scheduler: Any,
                     selective: SelectiveTeacher, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    path = ckpt_dir / CHECKPOINT
    fresh = {"epoch": 0, "history": [], "wall_s": 0.0}
    if not path.exists():
        return fresh
    try:
        ck = torch_load(path)
    except ArtifactError as e:
        print(f"[train] {e}; training from scratch", flush=True)
        return fresh
    if ck.get("config") != cfg.to_dict():
        raise ValueError(f"{path} was written with a different TrainConfig; use another folder or delete it\n"
                         f"  checkpoint: {ck.get('config')}\n  now:        {cfg.to_dict()}")
    if ck.get("provenance") != provenance:
        print(f"[train] {path} was trained on other inputs ({ck.get('provenance')}, now {provenance}); "
              f"training from scratch", flush=True)
        return fresh
    supernet.load_state_dict(ck["model"])
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    selective.load_state_dict(ck["teacher_stats"])
    return ck
