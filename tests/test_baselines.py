"""Baselines (chapter 2/5): shapes, the published parameter counts, clear errors."""

import pytest
import torch

from ersam_lib.measure.complexity import count_params
from ersam_lib.models.baselines import BASELINES, build_baseline

torch.set_num_threads(1)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_maps_bft_to_logits(name):
    model = build_baseline(name, n_features=40, n_classes=11).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 40, 200))
    assert out.shape == (2, 11)
    assert torch.isfinite(out).all()


def test_tcresnet_param_counts_match_choi_et_al():
    # Choi et al. 2019 report ~66 k (TC-ResNet8) and ~137 k (TC-ResNet14) parameters with 40 MFCCs, 12 classes.
    assert abs(count_params(build_baseline("tcresnet8", 40, 12)) - 66_000) < 2_000
    assert abs(count_params(build_baseline("tcresnet14", 40, 12)) - 137_000) < 3_000


def test_fcrnn_is_smaller_than_crnn():
    assert count_params(build_baseline("countnet_fcrnn", 40, 11)) < count_params(build_baseline("countnet_crnn", 40, 11))


def test_unknown_baseline_and_bad_sizes_raise():
    with pytest.raises(ValueError, match="unknown baseline"):
        build_baseline("resnet50", 40, 11)
    with pytest.raises(ValueError, match="n_classes"):
        build_baseline("tcresnet8", 40, 1)
    with pytest.raises(ValueError, match="n_features >= 22"):
        build_baseline("countnet_crnn", 10, 11)


def test_a_channels_last_model_trains_in_nhwc_and_comes_back_in_the_default_layout():
    from torch.utils.data import TensorDataset

    from ersam_lib.training.fit import FitConfig, train_classifier

    torch.manual_seed(0)
    x = torch.randn(48, 40, 64)
    y = (x[:, :20].mean(dim=(1, 2)) > x[:, 20:].mean(dim=(1, 2))).long()  # learnable from the input
    model = build_baseline("mobilenetv2", 40, 2)
    assert model.train_channels_last
    seen = []
    model.register_forward_pre_hook(lambda m, a: seen.append(m.features[0].weight.is_contiguous(
        memory_format=torch.channels_last) and m.training))
    report = train_classifier(model, TensorDataset(x, y), TensorDataset(x, y),
                              FitConfig(epochs=2, batch_size=16, max_train_samples=None), device="cpu")
    assert any(seen)  # the training steps ran channels-last
    assert all(p.is_contiguous() for p in model.parameters())  # what export and quantization expect
    assert len(report.history) == 2 and 0.0 <= report.best_val_acc <= 1.0
