"""The teacher of chapter 3: a large, accurate counter whose soft labels the supernet distils in chapter 4.

ERSAM distils from wav2vec2. Two teachers share one interface (``(B, ...) -> logits (B, n_classes)``):

- :class:`Wav2Vec2Counter`: torchaudio's wav2vec2 on the 16 kHz waveform, its last transformer layer mean-pooled
  over time, then a linear counting head. :func:`build_wav2vec2` loads the pretrained ``WAV2VEC2_BASE`` bundle when
  it can be downloaded; offline it raises :class:`TeacherUnavailable` (the caller falls back and says so).
- :class:`CRNNTeacher`: the offline default, a CountNet-style CRNN on the log-mel features that pools the frequency
  axis early (a full-resolution 2-D CRNN costs ~100 s per epoch on 2 CPU cores), then a bidirectional GRU.

:func:`ersam_lib.training.fit.fit_teacher` trains either one; :func:`save_teacher` / :func:`load_teacher` hand it to
chapter 4 through ``RUN_DIR/teacher/`` (``teacher.pt`` + ``teacher.json`` with its kind, size and accuracy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from data_prep.features import feature_meta
from ..measure.complexity import count_params

from ..core.io import ArtifactError, atomic_torch_save, atomic_write_json, sha256_file, torch_load
from ..core.rundir import check_made_from, damaged, read_run_json, require, run_file, stage_dir
from ..core.scales import sizes

__all__ = [
    "CRNNTeacher", "TeacherConfig", "TeacherUnavailable", "Wav2Vec2Counter", "build_teacher", "build_wav2vec2",
    "load_teacher", "save_teacher", "teacher_info", "tiny_wav2vec2",
]

KINDS: tuple[str, ...] = ("crnn", "wav2vec2")


class TeacherUnavailable(RuntimeError):
    """The pretrained wav2vec2 weights could not be obtained (offline machine, no cache)."""


@dataclass(frozen=True)
class TeacherConfig:
    """How chapter 3 builds and trains its teacher. ``channels``/``hidden`` size the CRNN; ``mix_rounds`` fresh
    training sets of dynamic mixing (:mod:`data_prep.dynamic`) let the teacher see ``mix_rounds + 1`` times the
    students' mixtures in the same number of steps (epoch ``e`` reads round ``e mod (mix_rounds + 1)``), drawn from
    the training sources ``mix_sources`` only when set (for example ``("librimini",)``: real voices)."""

    kind: str = "crnn"
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    channels: tuple[int, ...] = (16, 32, 64)
    hidden: int = 64
    max_train_samples: int | None = None
    mix_rounds: int = 0
    mix_sources: tuple[str, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mix_rounds < 0:
            raise ValueError(f"mix_rounds counts extra rounds of mixtures, >= 0; got {self.mix_rounds}")
        if self.mix_sources is not None:  # one source named alone, or a list: always a tuple from here on
            names = (self.mix_sources,) if isinstance(self.mix_sources, str) else tuple(self.mix_sources)
            object.__setattr__(self, "mix_sources", names)
        if self.mix_sources is not None and (not self.mix_sources or not self.mix_rounds):
            raise ValueError(f"mix_sources names the training sources of the extra rounds: it needs mix_rounds >= 1 "
                             f"and at least one source; got mix_rounds={self.mix_rounds}, "
                             f"mix_sources={self.mix_sources!r}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown teacher kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {self}")

    @classmethod
    def for_scale(cls, scale: str, **overrides: Any) -> TeacherConfig:
        """``smoke``: seconds; ``tutorial``: 10 to 13 minutes on 2 cores, 8 epochs over 8 distinct training sets
        (dynamic mixing, R = 7: 2.4 points of validation accuracy more than R = 0, ``benchmarks/archive/``);
        ``paper``: pretrained wav2vec2 on a GPU."""
        return cls(**(sizes("teacher", scale) | overrides))


# --------------------------------------------------------------------------------------------- the CRNN teacher
class CRNNTeacher(nn.Module):
    """CountNet-style CRNN on log-mel ``(B, F, T)`` with early frequency pooling (chapter 3's offline teacher).

    Three 3x3 conv blocks; the first pools frequency by 4 and time by 2, the second both by 2, the third collapses
    what remains of frequency; a bidirectional GRU reads the sequence; mean over time; linear head.
    """

    train_channels_last = True  # a training step is 1.15x faster in NHWC here (benchmarks/bench_channels_last.py)

    def __init__(self, n_features: int, n_classes: int, channels: tuple[int, ...] = (16, 32, 64), hidden: int = 64,
                 dropout: float = 0.3):
        super().__init__()
        if len(channels) != 3 or n_features < 8:
            raise ValueError(f"CRNNTeacher needs 3 channel counts and n_features >= 8, got {channels}, {n_features}")
        c1, c2, c3 = channels
        self.convs = nn.Sequential(
            _conv_block(1, c1, (4, 2)), _conv_block(c1, c2, (2, 2)), _conv_block(c2, c3, None), nn.Dropout(dropout),
        )
        self.gru = nn.GRU(c3, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, n_classes)
        self.n_features = n_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.n_features:
            raise ValueError(f"expected (batch, {self.n_features}, frames), got {tuple(x.shape)}")
        h = self.convs(x.unsqueeze(1)).amax(dim=2)  # (B, C, T/4): max over the remaining frequency bins
        h, _ = self.gru(h.transpose(1, 2))
        return self.head(h.mean(dim=1))


def _conv_block(c_in: int, c_out: int, pool: tuple[int, int] | None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    if pool is not None:
        layers.append(nn.MaxPool2d(pool))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------- the wav2vec2 teacher
class Wav2Vec2Counter(nn.Module):
    """wav2vec2 encoder + mean pooling over time + linear counting head, on waveforms ``(B, samples)`` (chapter 3)."""

    def __init__(self, encoder: nn.Module, n_classes: int, embed_dim: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(embed_dim, n_classes)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 2:
            raise ValueError(f"expected waveforms (batch, samples), got {tuple(wave.shape)}")
        feats, _ = self.encoder.extract_features(wave)
        return self.head(feats[-1].mean(dim=1))


def build_wav2vec2(n_classes: int, bundle_name: str = "WAV2VEC2_BASE") -> Wav2Vec2Counter:
    """The pretrained torchaudio bundle with a fresh counting head; :class:`TeacherUnavailable` when offline."""
    import torchaudio

    bundle = getattr(torchaudio.pipelines, bundle_name)
    try:
        encoder = bundle.get_model()
    except Exception as e:  # noqa: BLE001 - any download/cache failure means the same thing here
        raise TeacherUnavailable(f"could not load torchaudio.pipelines.{bundle_name} ({type(e).__name__}: {e}); "
                                 f"this machine is offline or the download failed") from e
    return Wav2Vec2Counter(encoder, n_classes, bundle._params["encoder_embed_dim"])


def tiny_wav2vec2(n_classes: int, embed_dim: int = 32, layers: int = 2) -> Wav2Vec2Counter:
    """A small randomly initialised wav2vec2 (same code path as the bundle), for tests and smoke runs."""
    from torchaudio.models import wav2vec2_model

    conv = [(16, 10, 5), (16, 3, 2), (16, 3, 2), (16, 2, 2)]
    encoder = wav2vec2_model(
        extractor_mode="group_norm", extractor_conv_layer_config=conv, extractor_conv_bias=False,
        encoder_embed_dim=embed_dim, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=16,
        encoder_pos_conv_groups=4, encoder_num_layers=layers, encoder_num_heads=2, encoder_attention_dropout=0.0,
        encoder_ff_interm_features=2 * embed_dim, encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
        encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None,
    )
    return Wav2Vec2Counter(encoder, n_classes, embed_dim)


def build_teacher(kind: str, n_features: int, n_classes: int, cfg: TeacherConfig | None = None) -> nn.Module:
    """A fresh teacher of ``kind`` (``"crnn"`` on log-mel or ``"wav2vec2"`` on waveforms) (chapter 3)."""
    cfg = cfg or TeacherConfig(kind=kind)
    if kind == "crnn":
        return CRNNTeacher(n_features, n_classes, tuple(cfg.channels), cfg.hidden)
    if kind == "wav2vec2":
        return build_wav2vec2(n_classes)
    raise ValueError(f"unknown teacher kind {kind!r}; expected one of {', '.join(KINDS)}")


# --------------------------------------------------------------------------------------------- hand-off to chapter 4
def save_teacher(run_dir: str | os.PathLike, model: nn.Module, info: dict[str, Any]) -> Path:
    """Write ``RUN_DIR/teacher/teacher.pt`` (a plain state dict) and then ``teacher.json`` (the "done" marker, with
    the weights' SHA-256) (chapter 3). ``info`` must hold ``kind``, ``n_features``, ``n_classes`` and, for the CRNN,
    ``channels``/``hidden``; ``data_key`` (the features' content key) makes :func:`load_teacher` check that the run's
    data are still the ones the teacher was trained on."""
    missing = {"kind", "n_features", "n_classes"} - set(info)
    if missing:
        raise ValueError(f"teacher info lacks {sorted(missing)}")
    weights = run_file(run_dir, "teacher_weights")
    run_file(run_dir, "teacher_info").unlink(missing_ok=True)  # not done until both files are written
    atomic_torch_save(model.state_dict(), weights)
    info = dict(info, params=count_params(model), weights_sha256=sha256_file(weights))
    atomic_write_json(run_file(run_dir, "teacher_info"), info)
    return stage_dir(run_dir, "teacher")


def load_teacher(run_dir: str | os.PathLike) -> nn.Module:
    """The trained teacher of chapter 3, frozen and in eval mode (used by chapter 4's distillation).

    Refuses weights that changed since chapter 3 wrote them and a teacher trained on other data than the run's
    features (chapter 1 rebuilt since): the error names the file and the command that retrains it.
    """
    info = teacher_info(run_dir)
    path = require(run_dir, "teacher_weights")
    if sha256_file(path) != info.get("weights_sha256"):
        raise damaged(path, run_dir, "teacher", "does not match the weights_sha256 in teacher.json (damaged or "
                      "replaced)")
    check_made_from(path, run_dir, "teacher", info.get("data_key"), lambda: feature_meta(run_dir).get("key"))
    if info["kind"] == "crnn":
        model: nn.Module = CRNNTeacher(info["n_features"], info["n_classes"], tuple(info["channels"]), info["hidden"])
    elif info["kind"] == "wav2vec2":
        model = tiny_wav2vec2(info["n_classes"], **info.get("tiny", {})) if "tiny" in info else \
            build_wav2vec2(info["n_classes"])
    else:
        raise ValueError(f"teacher.json names an unknown kind {info['kind']!r}")
    try:
        model.load_state_dict(torch_load(path))
    except ArtifactError as e:
        raise damaged(path, run_dir, "teacher", str(e)) from None
    except RuntimeError as e:  # weights of another shape than teacher.json describes
        raise damaged(path, run_dir, "teacher", f"does not fit teacher.json ({str(e).splitlines()[0][:200]})") from None
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def teacher_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``teacher.json`` chapter 3 wrote (kind, params, accuracy, the weights' hash, the data it was trained on)."""
    return read_run_json(run_dir, "teacher_info")
