"""Tests of the search space (chapter 4): values, sampling, the cost rule, sizes and the static networks."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random

import pytest
import torch

from ersam_lib.measure.complexity import count_params, macs_per_sample
from ersam_lib.models.space import Arch, SearchSpace, StageArch, StageSpace, build_model, stem_freq_bins

torch.set_num_threads(1)


class ThresholdRule:
    """Forbids operators whose channels, kernel and sequence length are all large (chapter 2's shape of rule)."""

    def __init__(self, channels: int, kernel: int, seq_len: int):
        self.c, self.k, self.n = channels, kernel, seq_len
        self.calls = 0

    def allows(self, channels: int, kernel: int, seq_len: int) -> bool:
        self.calls += 1
        return not (channels >= self.c and kernel >= self.k and seq_len >= self.n)


def tiny_space(rule=None, stem: StageSpace | None = None) -> SearchSpace:
    enc = (StageSpace((4, 8), (3, 5), (1, 2), (1, 2)),)
    ctx = (StageSpace((8, 12), (3, 5), (1, 2), (1, 2), (1, 2)),)
    return SearchSpace(enc, ctx, n_features=6, n_classes=3, n_frames=20, mixers=("none", "attn"), attn_dim=4,
                       stem=stem, rule=rule)


TINY_STEM = StageSpace((2, 3), (3, 5), (1, 2), (1, 2))


def brute_force(space: SearchSpace) -> list[Arch]:
    stems = list(space.stem.options()) if space.stem else [None]
    return [Arch(e, c, m, st) for st in stems for e in itertools.product(*(list(s.options()) for s in space.encoder))
            for c in itertools.product(*(list(s.options()) for s in space.context))
            for m in space.mixers if space.contains(Arch(e, c, m, st))]


def test_arch_round_trips_and_hashes():
    space = SearchSpace.for_scale("tutorial", 40, 11)
    a = space.sample(random.Random(0))
    d = json.loads(json.dumps(a.to_dict()))
    assert Arch.from_dict(d) == a and hash(Arch.from_dict(d)) == hash(a)
    assert Arch.from_json(a.to_json()) == a
    assert Arch.from_dict(d).arch_id == a.arch_id and len(a.arch_id) == 12
    assert space.largest().arch_id != space.smallest().arch_id
    with pytest.raises(ValueError):
        Arch.from_dict({"encoder": []})
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.mixer = "attn"  # type: ignore[misc]  # frozen: safe as a dict key and cache key


def test_sampling_is_seeded_and_inside_the_space():
    space = SearchSpace.for_scale("tutorial", 40, 11)
    s1 = [space.sample(random.Random(3)) for _ in range(3)]
    assert s1[0] == s1[1] == s1[2]
    rng = random.Random(1)
    archs = [space.sample(rng) for _ in range(200)]
    assert all(space.contains(a) for a in archs)
    assert len(set(archs)) > 150  # millions of archs: almost no repeats
    assert {a.mixer for a in archs} == {"none", "attn"}


def test_size_matches_brute_force_with_and_without_rule():
    free = tiny_space()
    assert free.size() == len(brute_force(free)) == (2 * 2 * 2 * 2) * (2 * 2 * 2 * 2 * 2) * 2
    ruled = tiny_space(ThresholdRule(channels=8, kernel=5, seq_len=20))
    allowed = brute_force(ruled)
    assert 0 < ruled.size() == len(allowed) < free.size()
    assert SearchSpace.for_scale("tutorial", 40, 11).log10_size() > 5
    stemmed = tiny_space(stem=TINY_STEM)
    assert stemmed.size() == len(brute_force(stemmed)) == free.size() * 16
    # the stem's k x k operators are asked as kernel k*k over F' x T' positions: a rule against kernel >= 25 at
    # >= 30 positions forbids the 5x5 kernels (over 3 bins x 10 or 20 frames) and only those
    ruled = tiny_space(ThresholdRule(channels=1, kernel=25, seq_len=30), stem=TINY_STEM)
    allowed = brute_force(ruled)
    assert ruled.size() == len(allowed) == free.size() * 8
    assert {a.stem.kernel for a in allowed} == {3}


def test_rule_filters_sample_mutate_crossover():
    rule = ThresholdRule(channels=8, kernel=5, seq_len=20)
    space = tiny_space(rule)
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(300)]
    assert all(space.contains(a) for a in archs) and rule.calls > 0
    for a, b in zip(archs[::2], archs[1::2]):
        assert space.contains(space.mutate(a, rng, 0.5))
        assert space.contains(space.crossover(a, b, rng))
    # the forbidden combination exists in the lists but never comes out
    bad = Arch((StageArch(8, 5, 1, 1),), (StageArch(8, 3, 1, 1, 1),), "none")
    assert tiny_space().contains(bad) and not space.contains(bad)
    assert bad not in set(archs)
    assert space.contains(space.largest()) and space.contains(space.smallest())
    # a rule forbidding everything gives a clear error instead of looping
    with pytest.raises(RuntimeError, match="forbid"):
        tiny_space(ThresholdRule(1, 1, 1)).sample(rng)


def test_mutate_and_crossover_semantics():
    space = SearchSpace.for_scale("tutorial", 40, 11)
    rng = random.Random(2)
    a, b = space.sample(rng), space.sample(rng)
    assert space.mutate(a, rng, 0.0) == a
    changed = sum(space.mutate(a, rng, 1.0) != a for _ in range(20))
    assert changed >= 18
    for _ in range(20):
        c = space.crossover(a, b, rng)
        assert all(x in (y, z) for x, y, z in zip(c.encoder + c.context, a.encoder + a.context, b.encoder + b.context))
    with pytest.raises(ValueError):
        space.mutate(a, rng, 1.5)
    with pytest.raises(ValueError):
        space.mutate(Arch(a.encoder, a.context, "gru"), rng, 0.1)


def test_largest_and_smallest_bound_the_space():
    space = SearchSpace.for_scale("tutorial", 40, 11, n_frames=250)
    big, small = space.largest(), space.smallest()
    p_big, p_small = count_params(build_model(big, 40, 11)), count_params(build_model(small, 40, 11))
    assert 150_000 <= p_big <= 260_000 and 8_000 <= p_small <= 25_000
    rng = random.Random(0)
    for a in (space.sample(rng) for _ in range(30)):
        assert space.macs(small) <= space.macs(a) <= space.macs(big)


def test_largest_respects_rule():
    rule = ThresholdRule(channels=48, kernel=7, seq_len=100)
    space = SearchSpace.for_scale("tutorial", 40, 11, rule=rule, n_frames=250)
    big = space.largest()
    assert space.contains(big) and big != SearchSpace.for_scale("tutorial", 40, 11).largest()


def test_operators_follow_strides_and_macs_match_torch_shapes():
    space = tiny_space()
    a = Arch((StageArch(8, 5, 2, 2),), (StageArch(12, 3, 2, 2, 2),), "attn")
    ops = space.operators(a)
    assert [op.seq_in for op in ops if op.is_conv] == [20, 10, 10, 10, 5, 5, 5, 5]
    assert ops[-2].kind == "attn" and ops[-1].kind == "linear"
    model = build_model(a, 6, 3, attn_dim=4).eval()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.groups) for c in convs] == \
        [(op.in_ch, op.out_ch, op.kernel, op.groups) for op in ops if op.is_conv]


def test_stem_arch_values_and_operators():
    space = tiny_space(stem=TINY_STEM)
    a = Arch((StageArch(8, 5, 2, 2),), (StageArch(12, 3, 2, 2, 2),), "attn", StageArch(3, 5, 2, 2))
    assert space.contains(a) and not space.contains(Arch(a.encoder, a.context, a.mixer))
    assert not tiny_space().contains(a)
    assert Arch.from_json(a.to_json()) == a and a.describe().startswith("stem[3e1k5s2x2] ")
    one_d = Arch(a.encoder, a.context, a.mixer)
    assert "stem" not in one_d.to_dict()  # a 1-D architecture keeps its id from before the stem existed
    assert one_d.arch_id == "f307dffb556b"  # its id before the stem was added (e6decda)
    ops = space.operators(a)
    stem_ops = [op for op in ops if op.is_2d]
    assert [op.kind for op in stem_ops] == ["conv2d"] * 3
    assert [(op.in_ch, op.kernel, op.freq_in, op.freq_out) for op in stem_ops] == [(1, 3, 6, 3), (3, 5, 3, 2),
                                                                                  (3, 5, 2, 2)]
    assert stem_ops[0].seq_out == 10 and stem_freq_bins(6) == 2
    assert ops[len(stem_ops)].in_ch == 3 * 2  # the encoder reads width x bins channels
    model = build_model(a, 6, 3, attn_dim=4).eval()
    assert model(torch.randn(2, 6, 20)).shape == (2, 3)
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d))]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.groups) for c in convs] == \
        [(op.in_ch, op.out_ch, op.kernel, op.groups) for op in ops if op.is_conv]
    assert space.macs(a) == macs_per_sample(model, torch.zeros(1, 6, 20))
    big, small = space.largest(), space.smallest()
    assert big.stem == StageArch(3, 5, 1, 2) and small.stem == StageArch(2, 3, 2, 1)
    with pytest.raises(ValueError, match="expan"):
        tiny_space(stem=StageSpace((2,), (3,), (1,), (1,), (1, 2)))


def test_build_model_shapes_and_errors():
    space = SearchSpace.for_scale("smoke", 16, 5, n_frames=60)
    rng = random.Random(0)
    for _ in range(5):
        m = build_model(space.sample(rng), 16, 5, space.attn_dim).eval()
        assert m(torch.randn(2, 16, 60)).shape == (2, 5)
        assert m(torch.randn(1, 16, 37)).shape == (1, 5)  # any length: pooled over time
    with pytest.raises(ValueError, match="features"):
        m(torch.randn(2, 15, 60))
    with pytest.raises(TypeError):
        build_model({"encoder": []}, 16, 5)


def test_space_serialises_and_validates():
    space = SearchSpace.for_scale("smoke", 16, 5, n_frames=60)
    back = SearchSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert back == space and back.size() == space.size()
    with pytest.raises(ValueError):
        StageSpace((8,), (4,), (1,), (1,))  # even kernel
    with pytest.raises(ValueError):
        SearchSpace.for_scale("huge", 16, 5)
    with pytest.raises(TypeError):
        SearchSpace.for_scale("smoke", 16, 5, rule=object())


def test_the_space_mac_formula_equals_the_traced_count():
    """One MAC count: the space's per-operator formula agrees with torch's flop counter on built networks."""
    space = SearchSpace.for_scale("tutorial", 40, 11, n_frames=251)
    rng = random.Random(3)
    archs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(4)]
    assert {a.mixer for a in archs} == {"none", "attn"}
    for arch in archs:
        model = build_model(arch, 40, 11, space.attn_dim)
        assert space.macs(arch) == macs_per_sample(model, torch.randn(2, 40, 251)), arch.describe()
