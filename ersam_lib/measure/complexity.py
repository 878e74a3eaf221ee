"""How big a network is: its parameter count and its multiply-accumulates per sample (one definition each).

Used wherever the book reports a model's size or compute: chapter 2 (profiling tables), chapter 3 (the teacher's
cost), chapter 4 (the supernet and the teacher's FLOPs in distillation), chapter 5 (the search's memory objective).
The search space states its MACs by formula (:meth:`ersam_lib.models.space.SearchSpace.macs`); the tests tie that
formula to :func:`macs_per_sample` on sampled architectures.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_params", "macs_per_sample"]


def count_params(model: nn.Module) -> int:
    """Number of parameters the model stores (trainable or frozen: a teacher or a published model counts too)."""
    return sum(p.numel() for p in model.parameters())


def macs_per_sample(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on the first sample of ``example``.

    Counted by ``torch.utils.flop_counter`` (convolutions, matrix products, attention; elementwise work such as
    BatchNorm and activations is not counted), FLOPs / 2. The model is run in eval mode and left as it was.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(example[:1])
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2
