"""The weight-sharing supernet of chapter 4 (Once-for-All style) and BatchNorm recalibration.

One set of weights, sized for the largest choice of every stage, serves every architecture of a
:class:`ersam_lib.models.space.SearchSpace`:

- :class:`ElasticConv1d` slices its largest weight: the first ``out`` output channels, the first ``in`` input
  channels (read from the input tensor) and the centre ``kernel`` taps (:class:`ElasticConv2d`: the centre
  ``kernel x kernel`` taps, for the 2-D stem, :class:`ElasticStem`);
- :class:`DynamicBatchNorm1d` slices its affine parameters *and* running statistics the same way;
- elastic depth runs only the first ``depth`` blocks of a stage (the last ones are skipped);
- :class:`ElasticLinear` slices the classifier's (and the attention's) input features.

Usage (chapters 4 and 5)::

    net = Supernet(space)                          # input (B, F, T) float32 -> logits (B, n_classes)
    net.set_active_subnet(space.largest()); logits = net(x)
    arch = net.sample_active_subnet(rng)           # a random allowed arch becomes active
    recalibrate_bn(net, batches, n_batches=20)     # before scoring a subnet
    static = net.get_active_subnet()               # plain ``space.StaticNet`` with the sliced weights copied

``get_active_subnet(arch)`` returns ``build_model(arch, ...)`` with the weights and BN statistics copied in; in eval
mode its outputs equal the supernet's for that arch (tests/test_supernet.py). Blocks beyond the active depth and the
attention block (when ``mixer="none"``) get no gradient, so wrap the supernet in DistributedDataParallel with
``find_unused_parameters=True``.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from data_prep.features import feature_meta
from ..measure.costrule import load_rule
from ..measure.evaluation import evaluate

from ..core.io import ArtifactError, atomic_torch_save, to_plain, torch_load
from ..core.rundir import check_made_from, damaged, require
from .space import (STEM_FREQ_STRIDE, Arch, AttentionBlock, EncoderBlock, InvertedResidual, SearchSpace, StageArch,
                    StageSpace, StaticNet, Stem2d, attention, build_model, check_input, stem_freq_bins)

__all__ = [
    "DynamicBatchNorm1d", "DynamicBatchNorm2d", "ElasticAttention", "ElasticConv1d", "ElasticConv2d",
    "ElasticEncoderBlock", "ElasticInvertedResidual", "ElasticLinear", "ElasticStem", "calibrated_subnet",
    "evaluate_arch", "load_supernet", "recalibrate_bn", "save_supernet", "Supernet"
]


# --------------------------------------------------------------------------------------------- elastic layers
class ElasticConv1d(nn.Module):
    """Conv1d (no bias) whose out channels, in channels and kernel (centre crop) shrink at run time (chapter 4).

    ``depthwise=True`` makes a depthwise conv: one filter per channel, the channel count read from the input.
    """

    dims = 1

    def __init__(self, max_in: int, max_out: int, max_kernel: int, depthwise: bool = False):
        super().__init__()
        if depthwise and max_in != max_out:
            raise ValueError("a depthwise conv has as many outputs as inputs")
        self.max_in, self.max_out, self.max_kernel, self.depthwise = max_in, max_out, max_kernel, depthwise
        in_per_group = 1 if depthwise else max_in
        self.weight = nn.Parameter(torch.empty(max_out, in_per_group, *(max_kernel,) * self.dims))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def active_weight(self, in_ch: int, out_ch: int, kernel: int) -> torch.Tensor:
        if kernel > self.max_kernel or kernel % 2 == 0:
            raise ValueError(f"kernel {kernel} must be odd and <= {self.max_kernel}")
        if in_ch > self.max_in or out_ch > self.max_out:
            raise ValueError(f"channels {in_ch}->{out_ch} exceed the supernet's {self.max_in}->{self.max_out}")
        taps = (slice((self.max_kernel - kernel) // 2, (self.max_kernel + kernel) // 2),) * self.dims
        if self.depthwise:
            return self.weight[(slice(None, in_ch), slice(None), *taps)]
        return self.weight[(slice(None, out_ch), slice(None, in_ch), *taps)]

    def forward(self, x: torch.Tensor, out_ch: int, kernel: int, stride: int | tuple[int, int] = 1) -> torch.Tensor:
        in_ch = x.shape[1]
        out_ch = in_ch if self.depthwise else out_ch
        w = self.active_weight(in_ch, out_ch, kernel)
        conv = F.conv1d if self.dims == 1 else F.conv2d
        return conv(x, w, None, stride, kernel // 2, 1, in_ch if self.depthwise else 1)

    def copy_to(self, conv: nn.Conv1d) -> None:
        """Copy the slice matching ``conv``'s shape into it (for :meth:`Supernet.get_active_subnet`)."""
        in_ch = conv.in_channels
        conv.weight.copy_(self.active_weight(in_ch, conv.out_channels, conv.kernel_size[0]))


class ElasticConv2d(ElasticConv1d):
    """:class:`ElasticConv1d` with square ``k x k`` kernels (centre crop in both axes), for the 2-D stem."""

    dims = 2


class DynamicBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over the first C channels of its buffers, C read from the input (chapter 4).

    Training updates only the active slice of ``running_mean``/``running_var`` (in place, through the view);
    ``momentum=None`` gives the cumulative average that :func:`recalibrate_bn` uses, as in ``nn.BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c > self.num_features:
            raise ValueError(f"{c} channels exceed the supernet's {self.num_features}")
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or self.running_mean is None
        keep = not self.training or self.track_running_stats
        return F.batch_norm(
            x, self.running_mean[:c] if keep else None, self.running_var[:c] if keep else None,
            self.weight[:c], self.bias[:c], use_batch, factor, self.eps,
        )

    def copy_to(self, bn: nn.BatchNorm1d) -> None:
        c = bn.num_features
        bn.weight.copy_(self.weight[:c])
        bn.bias.copy_(self.bias[:c])
        bn.running_mean.copy_(self.running_mean[:c])
        bn.running_var.copy_(self.running_var[:c])
        bn.num_batches_tracked.copy_(self.num_batches_tracked)
        bn.eps, bn.momentum = self.eps, self.momentum


class DynamicBatchNorm2d(DynamicBatchNorm1d):
    """:class:`DynamicBatchNorm1d` for the stem's ``(B, C, F, T)`` maps (batch norm is per channel either way)."""


class ElasticLinear(nn.Linear):
    """Linear layer over the first ``in`` features of its input (read from it) and the first ``out`` outputs."""

    def forward(self, x: torch.Tensor, out_features: int | None = None) -> torch.Tensor:
        o = self.out_features if out_features is None else out_features
        return F.linear(x, self.weight[:o, : x.shape[-1]], self.bias[:o])

    def copy_to(self, lin: nn.Linear) -> None:
        lin.weight.copy_(self.weight[: lin.out_features, : lin.in_features])
        lin.bias.copy_(self.bias[: lin.out_features])


# --------------------------------------------------------------------------------------------- elastic blocks
class ElasticEncoderBlock(nn.Module):
    """Elastic version of :class:`ersam_lib.models.space.EncoderBlock` (``dims=2``: the stem's blocks)."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int, residual: bool, dims: int = 1):
        super().__init__()
        self.conv = (ElasticConv1d if dims == 1 else ElasticConv2d)(max_in, max_out, max_kernel)
        self.bn = (DynamicBatchNorm1d if dims == 1 else DynamicBatchNorm2d)(max_out)
        self.residual = residual

    def forward(self, x: torch.Tensor, s: StageArch, stride: int | tuple[int, int]) -> torch.Tensor:
        y = F.relu(self.bn(self.conv(x, s.width, s.kernel, stride)))
        return x + y if self.residual else y

    def copy_to(self, block: EncoderBlock) -> None:
        self.conv.copy_to(block.conv)
        self.bn.copy_to(block.bn)


class ElasticInvertedResidual(nn.Module):
    """Elastic version of :class:`ersam_lib.models.space.InvertedResidual` (width, expansion, kernel)."""

    def __init__(self, max_in: int, max_out: int, max_expand: int, max_kernel: int, residual: bool):
        super().__init__()
        hidden = max_in * max_expand
        self.pw1 = ElasticConv1d(max_in, hidden, 1)
        self.bn1 = DynamicBatchNorm1d(hidden)
        self.dw = ElasticConv1d(hidden, hidden, max_kernel, depthwise=True)
        self.bn2 = DynamicBatchNorm1d(hidden)
        self.pw2 = ElasticConv1d(hidden, max_out, 1)
        self.bn3 = DynamicBatchNorm1d(max_out)
        self.residual = residual

    def forward(self, x: torch.Tensor, s: StageArch, stride: int) -> torch.Tensor:
        y = F.relu(self.bn1(self.pw1(x, x.shape[1] * s.expand, 1)))
        y = F.relu(self.bn2(self.dw(y, y.shape[1], s.kernel, stride)))
        y = self.bn3(self.pw2(y, s.width, 1))
        return x + y if self.residual else y

    def copy_to(self, block: InvertedResidual) -> None:
        for name in ("pw1", "bn1", "dw", "bn2", "pw2", "bn3"):
            getattr(self, name).copy_to(getattr(block, name))


class ElasticStem(nn.Module):
    """Elastic version of :class:`ersam_lib.models.space.Stem2d` (width, kernel, time stride, depth)."""

    def __init__(self, sp: StageSpace):
        super().__init__()
        w = max(sp.widths)
        self.conv = ElasticConv2d(1, w, 3)
        self.bn = DynamicBatchNorm2d(w)
        self.blocks = nn.ModuleList(ElasticEncoderBlock(w, w, max(sp.kernels), i > 0, dims=2)
                                    for i in range(max(sp.depths)))

    def forward(self, x: torch.Tensor, s: StageArch) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x.unsqueeze(1), s.width, 3, (STEM_FREQ_STRIDE, s.stride))))
        for i in range(s.depth):
            x = self.blocks[i](x, s, (STEM_FREQ_STRIDE, 1) if i == 0 else 1)
        return x.flatten(1, 2)

    def copy_to(self, stem: Stem2d) -> None:
        self.conv.copy_to(stem.conv)
        self.bn.copy_to(stem.bn)
        for elastic, static in zip(self.blocks, stem.blocks):
            elastic.copy_to(static)


class ElasticAttention(nn.Module):
    """Elastic version of :class:`ersam_lib.models.space.AttentionBlock`: the channel count follows the input."""

    def __init__(self, max_channels: int, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(max_channels)
        self.qkv = ElasticLinear(max_channels, 3 * dim)
        self.out = ElasticLinear(dim, max_channels)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return x + attention(x, self.norm.weight[:c], self.norm.bias[:c], self.norm.eps, self.qkv.weight[:, :c],
                             self.qkv.bias, self.out.weight[:c], self.out.bias[:c], self.dim)

    def copy_to(self, block: AttentionBlock) -> None:
        c = block.norm.normalized_shape[0]
        block.norm.weight.copy_(self.norm.weight[:c])
        block.norm.bias.copy_(self.norm.bias[:c])
        self.qkv.copy_to(block.qkv)
        self.out.copy_to(block.out)


# --------------------------------------------------------------------------------------------- the supernet
class Supernet(nn.Module):
    """All architectures of ``space`` in one set of shared weights (chapter 4; searched in chapter 5).

    ``n_features``/``n_classes`` default to the space's and must match it when given. The active architecture
    starts as ``space.largest()``.
    """

    def __init__(self, space: SearchSpace, n_features: int | None = None, n_classes: int | None = None):
        super().__init__()
        for name, given in (("n_features", n_features), ("n_classes", n_classes)):
            if given is not None and given != getattr(space, name):
                raise ValueError(f"{name}={given} does not match the search space's {getattr(space, name)}")
        self.space = space
        self.n_features, self.n_classes = space.n_features, space.n_classes
        self._choices = dataclasses.replace(space, rule=None)  # what the weights can compute, rule or not
        c = space.n_features
        self.stem = None if space.stem is None else ElasticStem(space.stem)
        if space.stem is not None:
            c = max(space.stem.widths) * stem_freq_bins(space.n_features)
        self.encoder = nn.ModuleList()
        for sp in space.encoder:
            w = max(sp.widths)
            self.encoder.append(nn.ModuleList(
                ElasticEncoderBlock(c if i == 0 else w, w, max(sp.kernels), i > 0) for i in range(max(sp.depths))))
            c = w
        self.context = nn.ModuleList()
        for sp in space.context:
            w, e, k = max(sp.widths), max(sp.expands), max(sp.kernels)
            self.context.append(nn.ModuleList(
                ElasticInvertedResidual(c if i == 0 else w, w, e, k, i > 0) for i in range(max(sp.depths))))
            c = w
        self.mixer = ElasticAttention(c, space.attn_dim) if "attn" in space.mixers else None
        self.head = ElasticLinear(c, space.n_classes)
        self._active = space.largest()

    @property
    def active_arch(self) -> Arch:
        return self._active

    def set_active_subnet(self, arch: Arch) -> None:
        """Make ``arch`` the architecture that :meth:`forward` computes."""
        if not self._choices.contains(arch):
            raise ValueError(f"architecture {getattr(arch, 'describe', lambda: arch)()} is not in the supernet's "
                             f"choice lists")
        self._active = arch

    def sample_active_subnet(self, rng: random.Random) -> Arch:
        """Draw a random allowed architecture (``space.sample``), make it active and return it."""
        arch = self.space.sample(rng)
        self.set_active_subnet(arch)
        return arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.n_features)
        arch = self._active
        if arch.stem is not None:
            x = self.stem(x, arch.stem)
        for blocks, s in zip(list(self.encoder) + list(self.context), arch.encoder + arch.context):
            for i in range(s.depth):
                x = blocks[i](x, s, s.stride if i == 0 else 1)
        if arch.mixer == "attn":
            x = self.mixer(x)
        return self.head(x.mean(dim=2))

    @torch.no_grad()
    def get_active_subnet(self, arch: Arch | None = None) -> StaticNet:
        """A standalone ``build_model(arch)`` with the sliced weights and BN statistics copied (default: active)."""
        arch = self._active if arch is None else arch
        if not self._choices.contains(arch):
            raise ValueError(f"architecture {arch!r} is not in the supernet's choice lists")
        model = build_model(arch, self.n_features, self.n_classes, self.space.attn_dim)
        if arch.stem is not None:
            self.stem.copy_to(model.stem)
        for blocks, static_blocks, s in zip(list(self.encoder) + list(self.context),
                                            list(model.encoder) + list(model.context), arch.encoder + arch.context):
            for i in range(s.depth):
                blocks[i].copy_to(static_blocks[i])
        if arch.mixer == "attn":
            self.mixer.copy_to(model.mixer)
        self.head.copy_to(model.head)
        device = next(self.parameters()).device
        return model.to(device).train(self.training)


# --------------------------------------------------------------------------------------------- BN recalibration
@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Any], n_batches: int) -> int:
    """Re-estimate every BatchNorm's running statistics on ``n_batches`` batches (chapter 4, before scoring).

    Running stats are reset, then accumulated in train mode with ``momentum=None`` (a cumulative average, so the
    result is the mean over the batches, not biased towards the last), without gradients; the previous mode and
    momenta are restored. ``batches`` yields input tensors or ``(x, y, ...)`` tuples. Returns the batches used.
    """
    if n_batches < 1:
        raise ValueError(f"n_batches must be >= 1, got {n_batches}")
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not bns:
        return 0
    was_training, momenta = model.training, [m.momentum for m in bns]
    device = next(model.parameters()).device
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    used = 0
    try:
        for batch in batches:
            if used >= n_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(device))
            used += 1
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)
    if used == 0:
        raise ValueError("recalibrate_bn got no batches")
    return used


def evaluate_arch(supernet: Supernet, arch: Arch, bn_loader: Iterable, eval_loader: Iterable,
                  n_bn_batches: int = 20) -> dict[str, float]:
    """Score one subnet: extract it, recalibrate its BatchNorm on ``n_bn_batches`` training batches, evaluate.

    Introduced in chapter 4 (ablation), used by the search in chapter 5. The supernet itself is left untouched.
    """
    return evaluate(calibrated_subnet(supernet, arch, bn_loader, n_bn_batches), eval_loader)


def calibrated_subnet(supernet: Supernet, arch: Arch, bn_loader: Iterable, n_bn_batches: int = 20) -> nn.Module:
    """Subnet ``arch`` extracted from the supernet with its BatchNorm recalibrated on ``n_bn_batches`` training
    batches (``(x, y)`` items) of ``bn_loader``: what every score of a subnet starts from (chapters 4 and 5)."""
    sub = supernet.get_active_subnet(arch)
    recalibrate_bn(sub, (b[0] for b in bn_loader), n_bn_batches)
    return sub


# --------------------------------------------------------------------------------------------- hand-off to chapter 5
def save_supernet(path: str | os.PathLike, supernet: Supernet, space: SearchSpace, info: dict[str, Any]) -> Path:
    """Save the trained supernet with its space description so :func:`load_supernet` rebuilds it (chapter 4).

    Tensors and plain values only (``info`` is turned into plain JSON values), so it loads with ``weights_only``;
    ``info["provenance"]["data"]``, the features' content key, lets the loader refuse it once the data changed.
    """
    return atomic_torch_save({"model": supernet.state_dict(), "space": to_plain(space.to_dict()),
                              "info": to_plain(info)}, path)


def load_supernet(run_dir: str | os.PathLike) -> tuple[Supernet, SearchSpace, dict]:
    """``(supernet, space, info)`` from chapter 4's ``RUN_DIR/supernet/supernet.pt``, in eval mode (chapter 5).

    The space carries chapter 2's cost rule again when ``RUN_DIR/profiling/rule.json`` exists. A damaged file, or a
    supernet trained on other data than the run's features, raises an error naming the file and chapter 4.
    """
    path = require(run_dir, "supernet")
    try:
        ck = torch_load(path)
        space = SearchSpace.from_dict(ck["space"], rule=load_rule(run_dir))
        net = Supernet(space, space.n_features, space.n_classes)
        net.load_state_dict(ck["model"])
        info = ck["info"]
    except ArtifactError as e:
        raise damaged(path, run_dir, "supernet", str(e)) from None
    except (KeyError, TypeError, RuntimeError) as e:
        why = f"cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        raise damaged(path, run_dir, "supernet", why) from None
    check_made_from(path, run_dir, "supernet", info.get("provenance", {}).get("data"),
                    lambda: feature_meta(run_dir).get("key"))
    return net.eval(), space, info
