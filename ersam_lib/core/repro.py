"""Reproducibility: one call that seeds every random generator a chapter uses and fixes the thread count.

Introduced in chapter 0; every chapter calls ``seed_everything(SEED)`` right after its parameters cell, so the same
``SEED`` gives the same data manifest and the same smoke metrics.
"""

from __future__ import annotations

import os
import random

import numpy as np

__all__ = ["MALLOC_ENV", "derived_seed", "pick_device", "seed_everything", "training_env"]

#: glibc malloc settings for the processes that train: never give freed memory back to the kernel. By default glibc
#: serves every allocation above a (dynamic) threshold with its own ``mmap`` and unmaps it on ``free``, so each
#: training step faults its activations' pages in again, zero-filled by the kernel. On the 2-core VM host this costs
#: a third of the CPU time and 1.6x the wall time of a teacher step (``benchmarks/bench_malloc.py``); the results
#: are the same, the price is that a process keeps its peak memory until it exits. ``make`` exports the same values
#: (a test checks they agree); the runner passes them to every chapter's kernel (:func:`training_env`).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**40), "MALLOC_TRIM_THRESHOLD_": str(2**40)}


def seed_everything(seed: int, threads: int | None = None) -> np.random.Generator:
    """Seed Python, NumPy and torch with ``seed``; optionally fix torch's intra-op threads.

    Returns a fresh ``numpy.random.Generator`` for code that prefers an explicit generator to global state.
    """
    import torch

    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"SEED must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    return np.random.default_rng(seed)


def training_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment) with :data:`MALLOC_ENV` added where the caller has not set
    those variables: the environment of a child process that trains (the runner's notebook kernels). glibc reads
    them at start-up only, so they must be in place before the process starts."""
    return dict(MALLOC_ENV) | dict(os.environ if env is None else env)


def derived_seed(*keys: int) -> int:
    """A 32-bit seed for one item of a larger job, derived from ``keys`` (the run's seed first, then the item's
    indices): independent of the order in which workers take the items (chapter 1's mixtures and voices)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def pick_device(device: str | None = "auto") -> "torch.device":
    """The device training runs on: ``"auto"`` (or ``None``) takes the GPU when there is one, else the CPU.

    Under ``torchrun`` on GPUs each process takes ``cuda:$LOCAL_RANK``. Asking for ``"cuda"`` on a machine without
    one is an error rather than a silent fallback: a ``ValueError`` (bad input, one line on the command line), as is a
    name torch does not know. Used by chapters 3-4 (teacher and supernet training).
    """
    import torch

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r} ({str(e).splitlines()[0]}); use 'auto', 'cpu', 'cuda' or "
                         f"'cuda:N'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but torch sees no CUDA GPU; use 'cpu' or 'auto'")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev
