"""The search space of chapter 4, abstracted from wav2vec2, and the static networks it describes.

wav2vec2 reads audio with a strided Conv1d *feature encoder* and models context with a *context network*. Our
space keeps that shape, sized for a phone CPU:

- **input**: float32 ``(B, F, T)`` = log-mel bands x frames (F ~ 40-64, T ~ 100-500 per 5-s segment); every model
  here takes this and returns logits ``(B, n_classes)``;
- **2-D stem** (optional, issue 11): the spectrogram as a one-channel image, ``Conv2d 3x3`` (frequency stride 2,
  time stride searched) then ``Conv2d k x k -> BatchNorm2d -> ReLU`` blocks (the first halves the frequency axis
  again, later ones add a residual), so that filters are shared across frequency as in MobileNetV2 and the CRNN
  teacher; its ``(width, F/4)`` maps are flattened into ``width * F/4`` channels for the encoder. Searched: width,
  kernel, time stride, depth (plain convolutions, not inverted residuals: on a CPU a 1x1 Conv2d over these
  long, narrow maps trains slower than a 3x3 one of the same width, ``benchmarks/stem_probe.py``);
- **feature encoder**: stages of ``Conv1d -> BatchNorm1d -> ReLU`` over the frames; the first block of a stage
  may stride, later blocks keep the length and add a residual; searched per stage: width (out channels), kernel,
  stride, depth;
- **context network**: stages of inverted-residual blocks (1x1 expand, depthwise conv, 1x1 project, as in
  MobileNetV2/OFA); searched per stage: width, expansion ratio, kernel, stride, depth;
- **mixer**: optionally one light single-head self-attention block (``"attn"``) or none (``"none"``);
- **head**: global average pooling over time and a linear classifier.

The hardware-aware filter of chapter 2: a ``rule`` object with ``.allows(channels, kernel, seq_len) -> bool``
(duck-typed; chapter 2's ``ersam_lib.experiments.profiling.CostRule`` is one) is asked about every convolution of an
architecture, with ``channels`` = the operator's output channels (for a depthwise conv, its channel count),
``kernel`` = its kernel size and ``seq_len`` = the length of the sequence it slides over (its *input* length).
Sequence lengths follow from the input frame count ``n_frames`` (T) and the strides, which is why the space knows T.
A stem's ``k x k`` 2-D operator over ``F' x T'`` positions is asked as a 1-D one with kernel ``k*k`` over ``F' * T'``
frames (the same multiply-accumulates; :meth:`OpSpec.rule_args`).
Architectures with a forbidden operator are not in the space: ``sample``, ``mutate``, ``crossover``, ``largest``
and ``smallest`` only return allowed ones, and ``contains`` checks it.

Names other chapters use: :class:`Arch` (a frozen, hashable, JSON-serialisable value with a stable ``arch_id``),
:class:`SearchSpace` (``for_scale``, ``sample``, ``largest``, ``smallest``, ``mutate``, ``crossover``, ``contains``,
``size``, ``operators``, ``macs``), :func:`space_for_run` (the space of a run, with chapter 2's rule: chapters 3-5
call it), :func:`build_model` (a plain static network with fresh weights, used by profiling in chapter 2, export and
deployment in chapter 6). Parameters are counted by :func:`ersam_lib.measure.complexity.count_params`. The
weight-sharing version of the same networks is :class:`ersam_lib.models.supernet.Supernet`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..core.scales import sizes
from ..measure.costrule import load_rule

__all__ = [
    "Arch", "attention", "attention_macs", "AttentionBlock", "build_model", "check_input", "EncoderBlock",
    "InvertedResidual", "MIXERS", "OpSpec", "Rule", "SearchSpace", "space_for_run", "StageArch", "StageSpace",
    "StaticNet", "Stem2d", "STEM_FREQ_STRIDE", "stem_freq_bins",
]

MIXERS: tuple[str, ...] = ("none", "attn")
_MAX_TRIES = 10_000
STEM_FREQ_STRIDE = 2  # the stem's conv and its first block each halve the frequency axis (fixed: see stem_freq_bins)


def stem_freq_bins(n_features: int) -> int:
    """Frequency bins a 2-D stem leaves of ``n_features`` mel bands (two stride-2 steps). Fixed for a space, so
    that the flattened channel ``c * bins + f`` means the same in every subnet and the supernet can slice it."""
    return _out_len(_out_len(n_features, STEM_FREQ_STRIDE), STEM_FREQ_STRIDE)


class Rule(Protocol):
    """What the space needs from chapter 2's cost rule (duck-typed)."""

    def allows(self, channels: int, kernel: int, seq_len: int) -> bool: ...


# --------------------------------------------------------------------------------------------- architectures
@dataclass(frozen=True)
class StageArch:
    """The choices made for one stage. ``expand`` is 1 (unused) in feature-encoder stages and the 2-D stem.
    In the stem, ``kernel`` is the blocks' ``k x k`` kernel and ``stride`` the first conv's time stride."""

    width: int
    kernel: int
    stride: int
    depth: int
    expand: int = 1


@dataclass(frozen=True)
class Arch:
    """One architecture of the space (chapter 4): a small, hashable, JSON-serialisable value.

    ``encoder`` and ``context`` hold one :class:`StageArch` per stage; ``mixer`` is ``"none"`` or ``"attn"``;
    ``stem`` is the 2-D stem's :class:`StageArch` in a space that has one, else ``None``.
    """

    encoder: tuple[StageArch, ...]
    context: tuple[StageArch, ...]
    mixer: str = "none"
    stem: StageArch | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists of dicts), the form saved in JSON files and search histories (``stem`` only when
        there is one, so a 1-D architecture keeps its ``arch_id``)."""
        d: dict[str, Any] = {
            "encoder": [dataclasses.asdict(s) for s in self.encoder],
            "context": [dataclasses.asdict(s) for s in self.context],
            "mixer": self.mixer,
        }
        if self.stem is not None:
            d["stem"] = dataclasses.asdict(self.stem)
        return d

    @property
    def stages(self) -> tuple[StageArch, ...]:
        """Every stage in order: the stem (when there is one), the encoder's, the context's."""
        return ((self.stem,) if self.stem is not None else ()) + self.encoder + self.context

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Arch:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on a malformed dict."""
        try:
            stage = lambda s: StageArch(**{k: int(v) for k, v in s.items()})  # noqa: E731
            enc = tuple(stage(s) for s in d["encoder"])
            ctx = tuple(stage(s) for s in d["context"])
            stem = stage(d["stem"]) if d.get("stem") is not None else None
            return cls(enc, ctx, str(d.get("mixer", "none")), stem)
        except (KeyError, TypeError) as e:
            raise ValueError(f"not an architecture dict: {d!r} ({e})") from e

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Arch:
        return cls.from_dict(json.loads(text))

    @property
    def arch_id(self) -> str:
        """Stable short content hash (same architecture -> same id on every machine and run)."""
        return hashlib.sha1(self.to_json().encode("utf-8")).hexdigest()[:12]

    def describe(self) -> str:
        """One-line human-readable summary, e.g. for table rows and figure labels."""
        enc = " ".join(f"{s.width}k{s.kernel}s{s.stride}x{s.depth}" for s in self.encoder)
        ctx = " ".join(f"{s.width}e{s.expand}k{s.kernel}s{s.stride}x{s.depth}" for s in self.context)
        st = self.stem
        stem = "" if st is None else f"stem[{st.width}e{st.expand}k{st.kernel}s{st.stride}x{st.depth}] "
        return f"{stem}enc[{enc}] ctx[{ctx}] {self.mixer}"


# --------------------------------------------------------------------------------------------- operators
@dataclass(frozen=True)
class OpSpec:
    """One operator of a static network, as chapter 2 profiles it. ``kind``: conv | dwconv | pwconv | attn | linear,
    or the 2-D stem's conv2d, whose ``kernel`` is the side of a square kernel and which slides over
    ``freq_in x seq_in`` positions (``freq_*`` is 1 for the 1-D operators)."""

    kind: str
    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    seq_in: int
    seq_out: int
    freq_in: int = 1
    freq_out: int = 1

    @property
    def groups(self) -> int:
        return self.in_ch if self.kind == "dwconv" else 1

    @property
    def is_2d(self) -> bool:
        return self.kind == "conv2d"

    @property
    def macs(self) -> int:
        """Multiply-accumulates per example (BatchNorm, activations and softmax ignored)."""
        if self.kind == "attn":  # out_ch = attention dim
            return attention_macs(self.in_ch, self.out_ch, self.seq_in)
        taps = self.kernel ** 2 if self.is_2d else self.kernel
        return self.out_ch * (self.in_ch // self.groups) * taps * self.seq_out * self.freq_out

    @property
    def is_conv(self) -> bool:
        return self.kind in ("conv", "dwconv", "pwconv", "conv2d")

    def rule_args(self) -> tuple[int, int, int]:
        """``(channels, kernel, seq_len)`` to ask chapter 2's rule about: a ``k x k`` 2-D operator over ``F x T``
        positions is asked as a 1-D one with kernel ``k*k`` over ``F * T`` frames (the same MACs per channel)."""
        if self.is_2d:
            return self.out_ch, self.kernel ** 2, self.freq_in * self.seq_in
        return self.out_ch, self.kernel, self.seq_in


def _out_len(seq_len: int, stride: int) -> int:
    # odd kernel, padding kernel // 2: the output length depends only on the stride
    return (seq_len - 1) // stride + 1


def _encoder_stage_ops(s: StageArch, c_in: int, seq: int) -> Iterator[OpSpec]:
    for i in range(s.depth):
        stride = s.stride if i == 0 else 1
        out = _out_len(seq, stride)
        yield OpSpec("conv", c_in if i == 0 else s.width, s.width, s.kernel, stride, seq, out)
        seq = out


def _stem_ops(s: StageArch, n_features: int, seq: int) -> Iterator[OpSpec]:
    f1, t1 = _out_len(n_features, STEM_FREQ_STRIDE), _out_len(seq, s.stride)
    yield OpSpec("conv2d", 1, s.width, 3, s.stride, seq, t1, n_features, f1)
    for i in range(s.depth):
        f_out = _out_len(f1, STEM_FREQ_STRIDE) if i == 0 else f1
        yield OpSpec("conv2d", s.width, s.width, s.kernel, 1, t1, t1, f1, f_out)
        f1 = f_out


def _context_stage_ops(s: StageArch, c_in: int, seq: int) -> Iterator[OpSpec]:
    for i in range(s.depth):
        cin = c_in if i == 0 else s.width
        hidden = cin * s.expand
        stride = s.stride if i == 0 else 1
        out = _out_len(seq, stride)
        yield OpSpec("pwconv", cin, hidden, 1, 1, seq, seq)
        yield OpSpec("dwconv", hidden, hidden, s.kernel, stride, seq, out)
        yield OpSpec("pwconv", hidden, s.width, 1, 1, out, out)
        seq = out


# --------------------------------------------------------------------------------------------- the space
@dataclass(frozen=True)
class StageSpace:
    """The choice lists of one stage (each a non-empty tuple of positive ints; kernels odd)."""

    widths: tuple[int, ...]
    kernels: tuple[int, ...]
    strides: tuple[int, ...]
    depths: tuple[int, ...]
    expands: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        for name in ("widths", "kernels", "strides", "depths", "expands"):
            vals = getattr(self, name)
            if not vals or any((not isinstance(v, int)) or v < 1 for v in vals):
                raise ValueError(f"StageSpace.{name} must be a non-empty tuple of positive ints, got {vals!r}")
            object.__setattr__(self, name, tuple(sorted(set(vals))))
        if any(k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernels must be odd (centre crop, 'same' padding), got {self.kernels}")

    def options(self) -> Iterator[StageArch]:
        for w in self.widths:
            for k in self.kernels:
                for s in self.strides:
                    for d in self.depths:
                        for e in self.expands:
                            yield StageArch(w, k, s, d, e)

    def contains(self, s: StageArch) -> bool:
        return (s.width in self.widths and s.kernel in self.kernels and s.stride in self.strides
                and s.depth in self.depths and s.expand in self.expands)

    def largest(self) -> StageArch:
        return StageArch(max(self.widths), max(self.kernels), min(self.strides), max(self.depths), max(self.expands))

    def smallest(self) -> StageArch:
        return StageArch(min(self.widths), min(self.kernels), max(self.strides), min(self.depths), min(self.expands))


def _stage_size_key(s: StageArch) -> tuple:
    # "bigger" for largest(): more compute first (longer output via smaller stride), then width, depth, kernel
    return (s.width * s.expand * s.depth * s.kernel / s.stride, s.width, s.depth, s.kernel, s.expand, -s.stride)


@dataclass
class SearchSpace:
    """The choice lists of the space plus what fixes its sequence lengths (chapter 4; searched in chapter 5).

    ``n_frames`` is the input length T; ``rule`` (optional) is chapter 2's cost rule. ``attn_dim`` is the width of
    the optional attention block's query/key/value. ``stem`` holds the 2-D stem's choice lists (``None``: no stem,
    the encoder reads the mel bands directly; depths start at 1, its first block halves the frequency axis).
    """

    encoder: tuple[StageSpace, ...]
    context: tuple[StageSpace, ...]
    n_features: int
    n_classes: int
    n_frames: int
    mixers: tuple[str, ...] = ("none", "attn")
    attn_dim: int = 32
    stem: StageSpace | None = None
    rule: Rule | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.encoder or not self.context:
            raise ValueError("a search space needs at least one encoder and one context stage")
        for name in ("n_features", "n_classes", "n_frames", "attn_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"SearchSpace.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")
        bad = [m for m in self.mixers if m not in MIXERS]
        if bad or not self.mixers:
            raise ValueError(f"mixers must be a non-empty subset of {MIXERS}, got {self.mixers!r}")
        if any(e != (1,) for e in (s.expands for s in self.encoder)):
            raise ValueError("encoder stages have no expansion ratio: leave expands=(1,)")
        if self.stem is not None and (self.stem.expands != (1,) or self.n_features < 4):
            raise ValueError("a 2-D stem has no expansion ratio (leave expands=(1,)) and needs >= 4 mel bands")
        if self.rule is not None and not callable(getattr(self.rule, "allows", None)):
            raise TypeError(f"rule must have .allows(channels, kernel, seq_len); got {type(self.rule).__name__}")
        self.encoder, self.context, self.mixers = tuple(self.encoder), tuple(self.context), tuple(self.mixers)

    # ---- construction
    @classmethod
    def for_scale(cls, scale: str, n_features: int, n_classes: int, rule: Rule | None = None,
                  n_frames: int = 250) -> SearchSpace:
        """The space used at ``scale`` (smoke | tutorial | paper) for inputs ``(B, n_features, n_frames)``.

        ``tutorial`` keeps the largest subnet near 0.2 M parameters so that chapter 4 trains it on 2 CPU cores.
        """
        table = sizes("space", scale)
        enc, ctx = (tuple(StageSpace(*s) for s in table[k]) for k in ("encoder", "context"))
        return cls(enc, ctx, n_features, n_classes, n_frames, ("none", "attn"), table["attn_dim"],
                   StageSpace(*table["stem"]), rule)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (the rule is not stored: pass it again to :meth:`from_dict`)."""
        d = dataclasses.asdict(self)
        d.pop("rule")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], rule: Rule | None = None) -> SearchSpace:
        def stages(xs: list[dict[str, Any]]) -> tuple[StageSpace, ...]:
            return tuple(StageSpace(**{k: tuple(v) for k, v in s.items()}) for s in xs)

        stem = stages([d["stem"]])[0] if d.get("stem") is not None else None
        return cls(stages(d["encoder"]), stages(d["context"]), int(d["n_features"]), int(d["n_classes"]),
                   int(d["n_frames"]), tuple(d["mixers"]), int(d["attn_dim"]), stem, rule)

    # ---- operators and the rule
    def operators(self, arch: Arch) -> list[OpSpec]:
        """Every operator of ``arch`` with its channels, kernel and sequence lengths (for profiling, chapter 2)."""
        ops: list[OpSpec] = [] if arch.stem is None else list(_stem_ops(arch.stem, self.n_features, self.n_frames))
        c, seq = self._stem_out(arch.stem)
        for s in arch.encoder:
            ops.extend(_encoder_stage_ops(s, c, seq))
            c, seq = s.width, ops[-1].seq_out
        for s in arch.context:
            ops.extend(_context_stage_ops(s, c, seq))
            c, seq = s.width, ops[-1].seq_out
        if arch.mixer == "attn":
            ops.append(OpSpec("attn", c, self.attn_dim, seq, 1, seq, seq))
        ops.append(OpSpec("linear", c, self.n_classes, 1, 1, 1, 1))
        return ops

    def macs(self, arch: Arch) -> int:
        """Multiply-accumulates of one forward pass on one ``n_frames`` input."""
        return sum(op.macs for op in self.operators(arch))

    def _ops_allowed(self, ops: Iterator[OpSpec] | list[OpSpec]) -> bool:
        if self.rule is None:
            return True
        return all(bool(self.rule.allows(*op.rule_args())) for op in ops if op.is_conv)

    def _stage_allowed(self, kind: str, s: StageArch, c_in: int, seq: int) -> bool:
        make = {"stem": _stem_ops, "encoder": _encoder_stage_ops, "context": _context_stage_ops}[kind]
        return self._ops_allowed(list(make(s, c_in, seq)))

    def _stem_out(self, s: StageArch | None) -> tuple[int, int]:
        """(channels, frames) the encoder receives after stem ``s`` (``None``: the mel bands themselves)."""
        if s is None:
            return self.n_features, self.n_frames
        return s.width * stem_freq_bins(self.n_features), _out_len(self.n_frames, s.stride)

    def contains(self, arch: Arch) -> bool:
        """True when every choice of ``arch`` is in the lists and the rule allows all of its operators."""
        if not isinstance(arch, Arch) or len(arch.encoder) != len(self.encoder) or \
                len(arch.context) != len(self.context) or arch.mixer not in self.mixers or \
                (arch.stem is None) != (self.stem is None):
            return False
        stages_ok = all(sp.contains(s) for sp, s in zip(self.stage_spaces, arch.stages))
        return stages_ok and self._ops_allowed(self.operators(arch))

    @property
    def stage_spaces(self) -> tuple[StageSpace, ...]:
        """Every stage's choice lists in the order of :attr:`Arch.stages` (stem, encoder, context)."""
        return ((self.stem,) if self.stem is not None else ()) + self.encoder + self.context

    def check(self, arch: Arch) -> Arch:
        """``arch`` if :meth:`contains` it, else a ``ValueError`` that says why."""
        if not self.contains(arch):
            raise ValueError(f"architecture {arch.describe() if isinstance(arch, Arch) else arch!r} is not in this "
                             f"search space (a choice outside the lists, or an operator the cost rule forbids)")
        return arch

    # ---- sampling and evolution
    def sample(self, rng: random.Random) -> Arch:
        """A uniformly random allowed architecture (rejection sampling against the rule)."""
        pick = lambda sp: None if sp is None else rng.choice(list(sp.options()))  # noqa: E731
        return self._draw(rng, lambda: Arch(tuple(pick(sp) for sp in self.encoder),
                                            tuple(pick(sp) for sp in self.context),
                                            rng.choice(self.mixers), pick(self.stem)), "sample")

    def mutate(self, arch: Arch, rng: random.Random, prob: float = 0.1) -> Arch:
        """Resample each choice (per stage: width, kernel, stride, depth, expand; the mixer) with ``prob``."""
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.check(arch)

        def one() -> Arch:
            enc = tuple(_mutate_stage(s, sp, rng, prob) for s, sp in zip(arch.encoder, self.encoder))
            ctx = tuple(_mutate_stage(s, sp, rng, prob) for s, sp in zip(arch.context, self.context))
            mixer = rng.choice(self.mixers) if rng.random() < prob else arch.mixer
            stem = None if arch.stem is None else _mutate_stage(arch.stem, self.stem, rng, prob)
            return Arch(enc, ctx, mixer, stem)

        return self._draw(rng, one, "mutate")

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        """Each stage (and the mixer) taken whole from ``a`` or ``b`` with probability 1/2."""
        self.check(a)
        self.check(b)
        pick = lambda x, y: x if rng.random() < 0.5 else y  # noqa: E731
        return self._draw(rng, lambda: Arch(tuple(pick(x, y) for x, y in zip(a.encoder, b.encoder)),
                                            tuple(pick(x, y) for x, y in zip(a.context, b.context)),
                                            pick(a.mixer, b.mixer), pick(a.stem, b.stem)), "crossover")

    def _draw(self, rng: random.Random, make: Any, what: str) -> Arch:
        for _ in range(_MAX_TRIES):
            arch = make()
            if self._ops_allowed(self.operators(arch)):
                return arch
        raise RuntimeError(f"{what}: no allowed architecture in {_MAX_TRIES} tries; the cost rule forbids "
                           f"(nearly) the whole space, relax it or shrink the choice lists")

    def largest(self) -> Arch:
        """The biggest allowed architecture: per stage, in order, the biggest option the rule allows."""
        return self._greedy(reverse=True)

    def smallest(self) -> Arch:
        """The smallest allowed architecture (smallest choices, largest strides, no attention)."""
        return self._greedy(reverse=False)

    def _greedy(self, reverse: bool) -> Arch:
        c, seq, chosen = self.n_features, self.n_frames, {"stem": [], "encoder": [], "context": []}
        for kind, spaces in (("stem", (self.stem,) if self.stem else ()), ("encoder", self.encoder),
                             ("context", self.context)):
            for sp in spaces:
                opts = sorted(sp.options(), key=_stage_size_key, reverse=reverse)
                s = next((o for o in opts if self._stage_allowed(kind, o, c, seq)), None)
                if s is None:
                    raise RuntimeError(f"the cost rule forbids every option of {kind} stage "
                                       f"{len(chosen[kind])} at sequence length {seq}")
                chosen[kind].append(s)
                c, seq = self._stem_out(s) if kind == "stem" else (s.width, _out_len(seq, s.stride))
        mixer = ("attn" if "attn" in self.mixers else "none") if reverse else (
            "none" if "none" in self.mixers else "attn")
        return Arch(tuple(chosen["encoder"]), tuple(chosen["context"]), mixer, (chosen["stem"] or [None])[0])

    # ---- size
    def size(self) -> int:
        """Number of allowed architectures, counted exactly by dynamic programming over (stage, sequence length)."""
        # state: (sequence length, channels) entering the stage; the first 1x1 expand depends on both
        counts: dict[tuple[int, int], int] = {}
        for s in (self.stem.options() if self.stem else [None]):
            if s is None or self._stage_allowed("stem", s, self.n_features, self.n_frames):
                c, seq = self._stem_out(s)
                counts[(seq, c)] = counts.get((seq, c), 0) + 1
        for kind, spaces in (("encoder", self.encoder), ("context", self.context)):
            for sp in spaces:
                nxt: dict[tuple[int, int], int] = {}
                for (seq, c), n in counts.items():
                    for o in sp.options():
                        if self._stage_allowed(kind, o, c, seq):
                            key = (_out_len(seq, o.stride), o.width)
                            nxt[key] = nxt.get(key, 0) + n
                counts = nxt
        return sum(counts.values()) * len(self.mixers)

    def log10_size(self) -> float:
        n = self.size()
        return math.log10(n) if n else float("-inf")


def space_for_run(run_dir: str | os.PathLike, scale: str, data: Any) -> SearchSpace:
    """The search space of ``scale`` for the features of a run (``data``: anything with ``n_features``,
    ``n_classes`` and ``n_frames``, such as :class:`ersam_lib.measure.data.FeatureData`), filtered by chapter 2's rule
    when ``RUN_DIR/profiling/rule.json`` exists. The one way chapters 3, 4 and 5 obtain their space."""
    return SearchSpace.for_scale(scale, data.n_features, data.n_classes, rule=load_rule(run_dir),
                                 n_frames=data.n_frames)


def _mutate_stage(s: StageArch, sp: StageSpace, rng: random.Random, prob: float) -> StageArch:
    r = lambda cur, choices: rng.choice(choices) if rng.random() < prob else cur  # noqa: E731
    return StageArch(r(s.width, sp.widths), r(s.kernel, sp.kernels), r(s.stride, sp.strides),
                     r(s.depth, sp.depths), r(s.expand, sp.expands))


# --------------------------------------------------------------------------------------------- static networks
class EncoderBlock(nn.Module):
    """Feature-encoder block: Conv1d -> BatchNorm1d -> ReLU, plus a residual when shapes allow (chapter 4).

    ``dims=2`` makes the 2-D stem's block (``k x k`` kernel; ``stride`` an int or a (freq, time) pair).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int | tuple[int, int], residual: bool,
                 dims: int = 1):
        super().__init__()
        conv, bn = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
        self.conv = conv(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = bn(c_out)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.conv(x)))
        return x + y if self.residual else y


class InvertedResidual(nn.Module):
    """Context block (MobileNetV2/OFA): 1x1 expand -> depthwise conv -> 1x1 project, BN after each (chapter 4)."""

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int, residual: bool):
        super().__init__()
        hidden = c_in * expand
        self.pw1 = nn.Conv1d(c_in, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.dw = nn.Conv1d(hidden, hidden, kernel, stride, padding=kernel // 2, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden)
        self.pw2 = nn.Conv1d(hidden, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm1d(c_out)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.pw1(x)))
        y = F.relu(self.bn2(self.dw(y)))
        y = self.bn3(self.pw2(y))
        return x + y if self.residual else y


class Stem2d(nn.Module):
    """The optional 2-D stem (issue 11): ``(B, F, T)`` -> ``(B, width * F', T')`` with ``F' = stem_freq_bins(F)``.

    ``Conv2d 3x3`` from one channel (frequency stride 2, time stride ``s.stride``), BN, ReLU, then ``s.depth`` 2-D
    :class:`EncoderBlock` s (``s.kernel x s.kernel``), the first with frequency stride 2; the ``(width, F')`` maps
    are flattened channel-major, so channel ``c * F' + f`` is stem channel ``c`` at bin ``f``.
    """

    def __init__(self, s: StageArch):
        super().__init__()
        self.conv = nn.Conv2d(1, s.width, 3, (STEM_FREQ_STRIDE, s.stride), 1, bias=False)
        self.bn = nn.BatchNorm2d(s.width)
        self.blocks = nn.ModuleList(
            EncoderBlock(s.width, s.width, s.kernel, (STEM_FREQ_STRIDE, 1) if i == 0 else 1, i > 0, dims=2)
            for i in range(s.depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x.unsqueeze(1))))
        for block in self.blocks:
            x = block(x)
        return x.flatten(1, 2)


def attention_macs(channels: int, dim: int, length: int) -> int:
    """Multiply-accumulates of :func:`attention` over ``length`` frames: the qkv and output projections and the two
    (L x L x d) products (the norm and the softmax ignored, as elsewhere)."""
    return length * 4 * channels * dim + 2 * length * length * dim


class AttentionBlock(nn.Module):
    """Light pre-norm single-head self-attention over time with a residual (the ``"attn"`` mixer, chapter 4).

    Its forward uses its layers' weights through :func:`attention` (shared with the supernet's elastic block), so
    chapter 2's cost model traces the block as one operator: ``cost_family`` and ``cost_macs`` say how."""

    cost_family = "attention"

    def __init__(self, channels: int, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * dim)
        self.out = nn.Linear(dim, channels)
        self.dim = dim

    def extra_repr(self) -> str:  # the block's LUT key (chapter 2): its cost depends on these two and the length
        return f"channels={self.norm.normalized_shape[0]}, dim={self.dim}"

    def cost_macs(self, in_shape: Sequence[int]) -> int:
        batch, channels, length = in_shape
        return batch * attention_macs(channels, self.dim, length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + attention(x, self.norm.weight, self.norm.bias, self.norm.eps, self.qkv.weight, self.qkv.bias,
                             self.out.weight, self.out.bias, self.dim)


def attention(x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, eps: float, qkv_w: torch.Tensor,
              qkv_b: torch.Tensor, out_w: torch.Tensor, out_b: torch.Tensor, dim: int) -> torch.Tensor:
    """The attention update (without the residual) of ``x`` (B, C, L); shared by the static and elastic blocks."""
    h = F.layer_norm(x.transpose(1, 2), (x.shape[1],), ln_w, ln_b, eps)
    q, k, v = F.linear(h, qkv_w, qkv_b).split(dim, dim=-1)
    a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(dim), dim=-1)
    return F.linear(a @ v, out_w, out_b).transpose(1, 2)


def check_input(x: torch.Tensor, n_features: int) -> None:
    """Clear error for an input that is not float ``(B, n_features, T)``."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[1] != n_features:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a float tensor (batch, {n_features} features, frames), got {shape}")


class StaticNet(nn.Module):
    """A plain network of the space: optional 2-D stem, encoder stages, context stages, optional attention,
    pooling, linear head."""

    def __init__(self, arch: Arch, n_features: int, n_classes: int, attn_dim: int = 32):
        super().__init__()
        self.arch, self.n_features, self.n_classes = arch, n_features, n_classes
        c = n_features
        self.stem = None if arch.stem is None else Stem2d(arch.stem)
        if arch.stem is not None:
            c = arch.stem.width * stem_freq_bins(n_features)
        self.encoder = nn.ModuleList()
        for s in arch.encoder:
            blocks = [EncoderBlock(c if i == 0 else s.width, s.width, s.kernel, s.stride if i == 0 else 1, i > 0)
                      for i in range(s.depth)]
            self.encoder.append(nn.ModuleList(blocks))
            c = s.width
        self.context = nn.ModuleList()
        for s in arch.context:
            blocks = [InvertedResidual(c if i == 0 else s.width, s.width, s.expand, s.kernel,
                                       s.stride if i == 0 else 1, i > 0) for i in range(s.depth)]
            self.context.append(nn.ModuleList(blocks))
            c = s.width
        self.mixer = AttentionBlock(c, attn_dim) if arch.mixer == "attn" else nn.Identity()
        self.head = nn.Linear(c, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.n_features)
        if self.stem is not None:
            x = self.stem(x)
        for stage in list(self.encoder) + list(self.context):
            for block in stage:
                x = block(x)
        return self.head(self.mixer(x).mean(dim=2))


def build_model(arch: Arch, n_features: int, n_classes: int, attn_dim: int = 32) -> StaticNet:
    """A plain static network for ``arch`` with fresh weights (chapter 4; exported and profiled in chapters 2, 6).

    ``attn_dim`` must match the space's (``SearchSpace.attn_dim``) when the arch uses the attention mixer.
    """
    if not isinstance(arch, Arch):
        raise TypeError(f"arch must be an Arch, got {type(arch).__name__}")
    if arch.mixer not in MIXERS:
        raise ValueError(f"unknown mixer {arch.mixer!r}; expected one of {MIXERS}")
    return StaticNet(arch, n_features, n_classes, attn_dim)
