"""Tests of the weight-sharing supernet and BN recalibration (chapter 4)."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from ersam_lib.measure.complexity import count_params
from ersam_lib.models.space import Arch, SearchSpace, StageArch, build_model, stem_freq_bins
from ersam_lib.models.supernet import DynamicBatchNorm1d, ElasticConv1d, Supernet, recalibrate_bn

torch.set_num_threads(1)


class ThresholdRule:
    def __init__(self, channels: int, kernel: int, seq_len: int):
        self.c, self.k, self.n = channels, kernel, seq_len

    def allows(self, channels: int, kernel: int, seq_len: int) -> bool:
        return not (channels >= self.c and kernel >= self.k and seq_len >= self.n)


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters, so that slicing mistakes change the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


@pytest.fixture(scope="module")
def smoke_net() -> Supernet:
    torch.manual_seed(0)
    net = Supernet(SearchSpace.for_scale("smoke", 16, 5, n_frames=48))
    randomise_bn(net)
    return net.eval()


def test_extracted_subnet_equals_supernet_on_random_archs(smoke_net):
    x = torch.randn(3, 16, 48)
    rng = random.Random(0)
    archs = [smoke_net.space.largest(), smoke_net.space.smallest()] + [smoke_net.space.sample(rng) for _ in range(40)]
    for arch in archs:
        smoke_net.set_active_subnet(arch)
        sub = smoke_net.get_active_subnet()
        assert not sub.training and sub.arch == arch
        torch.testing.assert_close(sub(x), smoke_net(x), atol=1e-5, rtol=1e-5)
        # the same weights from a fresh build: the extraction is a plain static network of the space
        assert isinstance(sub, type(build_model(arch, 16, 5))) and count_params(sub) == count_params(
            build_model(arch, 16, 5, smoke_net.space.attn_dim))


def test_tutorial_supernet_matches_its_subnets():
    torch.manual_seed(1)
    space = SearchSpace.for_scale("tutorial", 40, 11, n_frames=250)
    net = Supernet(space, 40, 11)
    randomise_bn(net, 1)
    net.eval()
    x = torch.randn(2, 40, 250)
    rng = random.Random(1)
    for arch in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(4)]:
        torch.testing.assert_close(net.get_active_subnet(arch)(x), (net.set_active_subnet(arch), net(x))[1],
                                   atol=1e-5, rtol=1e-4)
    # the supernet holds exactly the largest network's weights (plus nothing else)
    assert count_params(net) == count_params(build_model(space.largest(), 40, 11, space.attn_dim))


def test_elastic_conv_slices_channels_and_centre_of_kernel():
    conv = ElasticConv1d(6, 8, 7)
    x = torch.randn(2, 4, 20)
    y = conv(x, out_ch=5, kernel=3, stride=2)
    ref = nn.functional.conv1d(x, conv.weight[:5, :4, 2:5], None, 2, 1)
    torch.testing.assert_close(y, ref)
    dw = ElasticConv1d(6, 6, 5, depthwise=True)
    torch.testing.assert_close(dw(x, 4, 3), nn.functional.conv1d(x, dw.weight[:4, :, 1:4], None, 1, 1, 1, 4))
    with pytest.raises(ValueError):
        conv(x, out_ch=5, kernel=9)


def test_dynamic_bn_updates_only_the_active_slice():
    bn = DynamicBatchNorm1d(8, momentum=0.5).train()
    x = 3 + torch.randn(16, 5, 10)
    bn(x)
    torch.testing.assert_close(bn.running_mean[:5], 0.5 * x.mean(dim=(0, 2)))
    assert torch.equal(bn.running_mean[5:], torch.zeros(3)) and torch.equal(bn.running_var[5:], torch.ones(3))


def test_set_and_sample_active_subnet(smoke_net):
    rng = random.Random(5)
    arch = smoke_net.sample_active_subnet(rng)
    assert smoke_net.active_arch == arch and smoke_net.space.contains(arch)
    bad = Arch(arch.encoder, arch.context[:1], arch.mixer)
    with pytest.raises(ValueError):
        smoke_net.set_active_subnet(bad)
    with pytest.raises(ValueError):
        smoke_net.set_active_subnet(Arch((StageArch(99, 3, 1, 1),) + arch.encoder[1:], arch.context, arch.mixer))
    with pytest.raises(ValueError, match="features"):
        smoke_net(torch.randn(2, 15, 48))
    with pytest.raises(ValueError, match="n_features"):
        Supernet(smoke_net.space, n_features=17)


def test_sampling_respects_the_rule():
    space = SearchSpace.for_scale("smoke", 16, 5, rule=ThresholdRule(12, 5, 48), n_frames=48)
    net = Supernet(space)
    rng = random.Random(0)
    for _ in range(50):
        arch = net.sample_active_subnet(rng)
        assert all(space.rule.allows(*op.rule_args()) for op in space.operators(arch) if op.is_conv)
        assert all(not (op.out_ch >= 12 and op.kernel >= 5 and op.seq_in >= 48)
                   for op in space.operators(arch) if op.is_conv and not op.is_2d)


def test_sandwich_step_trains_shared_weights():
    torch.manual_seed(0)
    space = SearchSpace.for_scale("smoke", 16, 5, n_frames=48)
    net = Supernet(space).train()
    x, y = torch.randn(8, 16, 48), torch.randint(0, 5, (8,))
    for arch in (space.largest(), space.smallest()):
        net.set_active_subnet(arch)
        nn.functional.cross_entropy(net(x), y).backward()
    first = net.encoder[0][0].conv.weight
    assert first.grad is not None and first.grad[:8].abs().sum() > 0  # the smallest's slice got gradients
    assert net.encoder[1][1].conv.weight.grad is not None  # the largest's second block too
    assert net.stem.conv.weight.grad[:2].abs().sum() > 0 and net.stem.blocks[0].conv.weight.grad is not None


def test_stem_shares_weights_channel_major():
    """The encoder's input channel c * F' + f is stem channel c at bin f in every subnet: a narrower stem uses the
    first width x F' input columns of the encoder's first conv, and its own first output channels."""
    torch.manual_seed(0)
    space = SearchSpace.for_scale("smoke", 16, 5, n_frames=48)
    net = Supernet(space).eval()
    bins = stem_freq_bins(16)
    arch = space.smallest()
    assert arch.stem.width < max(space.stem.widths)
    sub = net.get_active_subnet(arch)
    enc_w = net.encoder[0][0].conv.weight
    k = arch.encoder[0].kernel
    start = (enc_w.shape[2] - k) // 2
    torch.testing.assert_close(sub.encoder[0][0].conv.weight,
                               enc_w[:arch.encoder[0].width, :arch.stem.width * bins, start:start + k])
    torch.testing.assert_close(sub.stem.conv.weight, net.stem.conv.weight[:arch.stem.width])
    x = torch.randn(2, 16, 48)
    assert sub.stem(x).shape == (2, arch.stem.width * bins, (48 - 1) // arch.stem.stride + 1)


def test_recalibrate_bn_one_batch_equals_batch_statistics():
    model = nn.Sequential(nn.BatchNorm1d(4, momentum=0.1))
    model.eval()
    x = 2 + 3 * torch.randn(32, 4, 50)
    used = recalibrate_bn(model, [x, torch.randn(32, 4, 50)], n_batches=1)
    bn = model[0]
    assert used == 1 and not model.training and bn.momentum == 0.1
    torch.testing.assert_close(bn.running_mean, x.mean(dim=(0, 2)))
    torch.testing.assert_close(bn.running_var, x.var(dim=(0, 2), unbiased=True))


def test_recalibrate_bn_averages_batches_and_stops_at_n():
    model = nn.Sequential(nn.BatchNorm1d(3)).train()
    batches = [(torch.randn(16, 3, 20) + i, torch.zeros(16)) for i in range(5)]  # (x, y) tuples
    seen = []

    def gen():
        for b in batches:
            seen.append(1)
            yield b

    assert recalibrate_bn(model, gen(), n_batches=3) == 3 and len(seen) <= 4
    expected = torch.stack([b[0].mean(dim=(0, 2)) for b in batches[:3]]).mean(0)
    torch.testing.assert_close(model[0].running_mean, expected)
    assert model.training and model[0].num_batches_tracked.item() == 3
    with pytest.raises(ValueError):
        recalibrate_bn(model, [], n_batches=2)


def test_recalibrating_supernet_equals_recalibrating_extracted_subnet(smoke_net):
    torch.manual_seed(3)
    batches = [torch.randn(8, 16, 48) * 2 + 1 for _ in range(3)]
    arch = smoke_net.space.sample(random.Random(11))
    smoke_net.set_active_subnet(arch)
    before = smoke_net.get_active_subnet()
    recalibrate_bn(before, batches, n_batches=3)  # the static net, recalibrated alone
    recalibrate_bn(smoke_net, batches, n_batches=3)  # the supernet, active arch only
    after = smoke_net.get_active_subnet()
    assert not smoke_net.training
    for (name, a), (_, b) in zip(before.named_buffers(), after.named_buffers()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)
    x = torch.randn(2, 16, 48)
    torch.testing.assert_close(after(x), smoke_net(x), atol=1e-5, rtol=1e-5)
    # the statistics really changed: inputs are far from the reset (0, 1) and from the old random stats
    assert after.encoder[0][0].bn.running_mean.abs().max() > 0.05
