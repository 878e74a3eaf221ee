"""Baseline networks for social ambiance measurement (profiled in chapter 2, trained and compared in chapter 5).

Every model in the book takes a float32 tensor ``(B, F, T)`` (F log-mel bands x T frames of one 5-s segment) and
returns logits ``(B, n_classes)``. The baselines are:

- ``countnet_crnn`` and ``countnet_fcrnn``: CountNet (Stoeter et al. 2018/2019), the LibriCount reference models;
- ``tcresnet8`` and ``tcresnet14``: temporal-convolution ResNets (Choi et al. 2019), the bands are the channels;
- ``mobilenetv2``: a MobileNetV2-style 2-D net on the spectrogram (Speckhard et al.'s strongest baseline).

One deliberate deviation: CountNet flattens the LSTM's time axis into the dense layer, which ties the net to one
segment length; here the LSTM output is averaged over time instead, so one constructor serves every feature size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["BASELINES", "CountNetCRNN", "CountNetFCRNN", "MobileNetV2Audio", "TCResNet", "build_baseline"]


class _TimeMeanHead(nn.Module):
    """LSTM over time -> MaxPool(2) over time -> mean over time -> Linear: CountNet's head without the flatten."""

    def __init__(self, n_in: int, n_hidden: int, n_classes: int):
        super().__init__()
        self.lstm = nn.LSTM(n_in, n_hidden, batch_first=True)
        self.pool = nn.MaxPool1d(2, ceil_mode=True)
        self.fc = nn.Linear(n_hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, C)
        h, _ = self.lstm(x)
        h = self.pool(h.transpose(1, 2))  # (B, H, T/2)
        return self.fc(h.mean(dim=2))


class CountNetCRNN(nn.Module):
    """CountNet CRNN: 2-D 3x3 convs (64, 32, pool 3, 128, 64, pool 3), channels x frequency stacked, LSTM(40)."""

    def __init__(self, n_features: int, n_classes: int, dropout: float = 0.5):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(1, 64, 3), nn.ReLU(), nn.Conv2d(64, 32, 3), nn.ReLU(), nn.MaxPool2d(3),
            nn.Conv2d(32, 128, 3), nn.ReLU(), nn.Conv2d(128, 64, 3), nn.ReLU(), nn.MaxPool2d(3),
            nn.Dropout(dropout),
        )
        f_out = ((n_features - 4) // 3 - 4) // 3
        if f_out < 1:
            raise ValueError(f"countnet_crnn needs n_features >= 22 (four 3x3 convs, two 3x pools), got {n_features}")
        self.head = _TimeMeanHead(64 * f_out, 40, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x.unsqueeze(1))  # (B, 64, F', T')
        b, c, f, t = h.shape
        return self.head(h.permute(0, 3, 1, 2).reshape(b, t, c * f))


class CountNetFCRNN(nn.Module):
    """CountNet F-CRNN: Conv1D(32,k3) MaxPool4 Conv1D(64,k3) MaxPool2 Conv1D(64,k3) Dropout LSTM(40) Dense."""

    def __init__(self, n_features: int, n_classes: int, dropout: float = 0.5):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv1d(n_features, 32, 3), nn.ReLU(), nn.MaxPool1d(4),
            nn.Conv1d(32, 64, 3), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(64, 64, 3), nn.ReLU(), nn.Dropout(dropout),
        )
        self.head = _TimeMeanHead(64, 40, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x).transpose(1, 2))


class _TCBlock(nn.Module):
    """TC-ResNet residual block: conv k9 (stride s) BN ReLU conv k9 BN, 1x1 conv shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int = 9):
        super().__init__()
        pad = kernel // 2
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, kernel, stride, pad, bias=False), nn.BatchNorm1d(c_out), nn.ReLU(),
            nn.Conv1d(c_out, c_out, kernel, 1, pad, bias=False), nn.BatchNorm1d(c_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv1d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm1d(c_out), nn.ReLU()
            )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class TCResNet(nn.Module):
    """TC-ResNet (Choi et al. 2019): the F bands are input channels of a 1-D conv net over time."""

    def __init__(self, n_features: int, n_classes: int, channels: Sequence[int], width: float = 1.0):
        super().__init__()
        ch = [max(1, int(round(c * width))) for c in channels]
        self.stem = nn.Conv1d(n_features, ch[0], 3, 1, 1, bias=False)
        blocks = []
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            blocks.append(_TCBlock(c_in, c_out, stride=2 if c_in != c_out else 1))
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(ch[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


class _InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise (stride s), 1x1 project; residual when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hid = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(c_in, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.ReLU6()]
        layers += [
            nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(),
            nn.Conv2d(hid, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


# (expansion t, channels c, repeats n, stride s): MobileNetV2's table, cut after the 96-channel stage because
# a 5-s spectrogram is small; width 0.5 keeps it near Speckhard's on-device baseline size.
_MBV2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
)


class MobileNetV2Audio(nn.Module):
    """A MobileNetV2-style 2-D net on the (F, T) spectrogram, as Speckhard et al.'s baseline."""

    # A training step is about 1.3x faster in channels-last (NHWC) memory on this CPU (depthwise convolutions and
    # BatchNorm are slow on NCHW there); the CountNet CRNN is 20 % slower, so
    # :func:`ersam_lib.training.fit.train_classifier` asks each model (``benchmarks/bench_channels_last.py``).
    train_channels_last = True

    def __init__(self, n_features: int, n_classes: int, width: float = 0.5, last: int = 640):
        super().__init__()
        c = max(8, int(32 * width))
        layers: list[nn.Module] = [nn.Conv2d(1, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU6()]
        for t, ch, n, s in _MBV2_STAGES:
            c_out = max(8, int(ch * width))
            for i in range(n):
                layers.append(_InvertedResidual(c, c_out, s if i == 0 else 1, t))
                c = c_out
        layers += [nn.Conv2d(c, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x.unsqueeze(1))).flatten(1))


BASELINES: dict[str, Callable[[int, int], nn.Module]] = {
    "countnet_crnn": CountNetCRNN,
    "countnet_fcrnn": CountNetFCRNN,
    "tcresnet8": lambda f, k: TCResNet(f, k, (16, 24, 32, 48)),
    "tcresnet14": lambda f, k: TCResNet(f, k, (16, 24, 24, 32, 32, 48, 48)),
    "mobilenetv2": MobileNetV2Audio,
}


def build_baseline(name: str, n_features: int, n_classes: int) -> nn.Module:
    """A fresh baseline network ``name`` (one of :data:`BASELINES`) for ``(B, n_features, T)`` inputs.

    Introduced in chapter 2 (profiled), trained in chapter 5; chapter 3 may use ``countnet_crnn`` as a teacher.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    if n_features < 1 or n_classes < 2:
        raise ValueError(f"need n_features >= 1 and n_classes >= 2, got {n_features}, {n_classes}")
    return BASELINES[name](n_features, n_classes)
