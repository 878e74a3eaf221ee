"""The teacher of chapter 3: a large, accurate counter whose soft labels the supernet distils in chapter 4.

ERSAM distils from wav2vec2. Two teachers share one interface (``(B, ...) -> logits (B, n_classes)``):

- :class:`Wav2Vec2Counter`: torchaudio's wav2vec2 on the 16 kHz waveform, its last transformer layer mean-pooled
  over time, then a linear counting head. :func:`build_wav2vec2` loads the pretrained ``WAV2VEC2_BASE`` bundle when
  it can be downloaded; offline it raises :class:`TeacherUnavailable` (the caller falls back and says so).
- :class:`CRNNTeacher`: the offline default, a CountNet-style CRNN on the log-mel features that pools the frequency
  axis early (a full-resolution 2-D CRNN costs ~100 s per epoch on 2 CPU cores), then a bidirectional GRU.

:func:`train_classifier` fits either one; :func:`save_teacher` / :func:`load_teacher` hand it to chapter 4 through
``RUN_DIR/teacher/`` (``teacher.pt`` + ``teacher.json`` with its kind, size and accuracy).
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from .io import atomic_torch_save, atomic_write_json, read_json
from .progress import progress
from .scales import check_scale

__all__ = [
    "CRNNTeacher", "TeacherConfig", "TeacherUnavailable", "Wav2Vec2Counter", "build_teacher", "build_wav2vec2",
    "load_teacher", "save_teacher", "tiny_wav2vec2", "train_classifier",
]

KINDS: tuple[str, ...] = ("crnn", "wav2vec2")


class TeacherUnavailable(RuntimeError):
    """The pretrained wav2vec2 weights could not be obtained (offline machine, no cache)."""


@dataclass(frozen=True)
class TeacherConfig:
    """How chapter 3 builds and trains its teacher. ``channels``/``hidden`` size the CRNN."""

    kind: str = "crnn"
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    channels: tuple[int, ...] = (16, 32, 64)
    hidden: int = 64
    max_train_samples: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown teacher kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {self}")

    @classmethod
    def for_scale(cls, scale: str, **overrides: Any) -> TeacherConfig:
        """``smoke``: seconds; ``tutorial``: a few minutes on 2 cores; ``paper``: pretrained wav2vec2 on a GPU."""
        sizes = {
            "smoke": dict(epochs=2, batch_size=16, channels=(8, 16, 16), hidden=16),
            "tutorial": dict(epochs=8, batch_size=64, channels=(24, 48, 96), hidden=96),
            "paper": dict(kind="wav2vec2", epochs=20, batch_size=32, lr=5e-5),
        }[check_scale(scale)]
        return cls(**(sizes | overrides))


# --------------------------------------------------------------------------------------------- the CRNN teacher
class CRNNTeacher(nn.Module):
    """CountNet-style CRNN on log-mel ``(B, F, T)`` with early frequency pooling (chapter 3's offline teacher).

    Three 3x3 conv blocks; the first pools frequency by 4 and time by 2, the second both by 2, the third collapses
    what remains of frequency; a bidirectional GRU reads the sequence; mean over time; linear head.
    """

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


# --------------------------------------------------------------------------------------------- training
@dataclass
class FitReport:
    """What :func:`train_classifier` measured: per-epoch history, best validation accuracy, wall time."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_val_acc: float = 0.0
    best_epoch: int = 0
    wall_s: float = 0.0


def train_classifier(model: nn.Module, train_ds: Dataset, val_ds: Dataset, cfg: TeacherConfig,
                     device: str | None = "auto") -> FitReport:
    """Supervised training with AdamW, cosine LR, clipping; keeps the weights of the best validation epoch.

    Introduced in chapter 3 for the teacher; ``train_ds``/``val_ds`` yield ``(input, label)``. The model is moved
    to ``device`` (:func:`~ersam_lib.repro.pick_device`: the GPU when there is one) and stays there.
    """
    from .repro import pick_device
    from .train import evaluate, eval_loader

    dev = pick_device(device)
    model.to(dev)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=RandomSampler(train_ds, generator=gen),
                        drop_last=len(train_ds) > cfg.batch_size)  # type: ignore[arg-type]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * len(loader),
                                                pct_start=0.15)
    report, best, t0 = FitReport(), copy.deepcopy(model.state_dict()), time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        total, n = 0.0, 0
        for x, y in progress(loader, desc=f"teacher epoch {epoch + 1}/{cfg.epochs}", leave=False):
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            total, n = total + float(loss.detach()) * len(y), n + len(y)
        val = evaluate(model, eval_loader(val_ds, 128))
        report.history.append({"epoch": epoch + 1, "train_loss": total / n, "val_acc": val["acc"],
                               "val_mae": val["mae"], "wall_s": time.perf_counter() - t0})
        if val["acc"] >= report.best_val_acc:
            report.best_val_acc, report.best_epoch = val["acc"], epoch + 1
            best = copy.deepcopy(model.state_dict())
    model.load_state_dict(best)
    report.wall_s = time.perf_counter() - t0
    return report


# --------------------------------------------------------------------------------------------- hand-off to chapter 4
def save_teacher(run_dir: str | os.PathLike, model: nn.Module, info: dict[str, Any]) -> Path:
    """Write ``RUN_DIR/teacher/teacher.pt`` and ``teacher.json`` (``info`` must hold ``kind``, ``n_features``,
    ``n_classes`` and, for the CRNN, ``channels``/``hidden``) (chapter 3)."""
    from .rundir import stage_dir

    missing = {"kind", "n_features", "n_classes"} - set(info)
    if missing:
        raise ValueError(f"teacher info lacks {sorted(missing)}")
    folder = stage_dir(run_dir, "teacher")
    info = dict(info, params=sum(p.numel() for p in model.parameters()))
    atomic_torch_save(model.state_dict(), folder / "teacher.pt")
    atomic_write_json(folder / "teacher.json", info)
    return folder


def load_teacher(run_dir: str | os.PathLike) -> nn.Module:
    """The trained teacher of chapter 3, frozen and in eval mode (used by chapter 4's distillation)."""
    from .rundir import require_stage

    info = read_json(require_stage(run_dir, "teacher", "teacher.json", "03"))
    if info["kind"] == "crnn":
        model: nn.Module = CRNNTeacher(info["n_features"], info["n_classes"], tuple(info["channels"]), info["hidden"])
    elif info["kind"] == "wav2vec2":
        model = tiny_wav2vec2(info["n_classes"], **info.get("tiny", {})) if "tiny" in info else \
            build_wav2vec2(info["n_classes"])
    else:
        raise ValueError(f"teacher.json names an unknown kind {info['kind']!r}")
    state = torch.load(Path(run_dir) / "teacher" / "teacher.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def teacher_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``teacher.json`` chapter 3 wrote (kind, params, accuracy)."""
    from .rundir import require_stage

    return read_json(require_stage(run_dir, "teacher", "teacher.json", "03"))


def macs_per_sample(model: nn.Module, example: torch.Tensor) -> float:
    """Multiply-accumulates of one forward pass on one sample (FLOPs / 2, by ``torch.utils.flop_counter``)."""
    from .distill import teacher_flops_per_sample

    return teacher_flops_per_sample(model, example) / 2



# --------------------------------------------------------------------------------------------- chapter 3 in one call
class WaveformDataset(Dataset):
    """Items ``(float32 waveform (samples,), label)`` rendered on the fly from chapter 1's manifest (chapter 3).

    The wav2vec2 teacher reads waveforms, not features; rendering is deterministic, so nothing is cached.
    """

    def __init__(self, run_dir: str | os.PathLike, split: str, limit: int | None = None):
        from data_prep.build import load_manifest, open_run_source

        rows = load_manifest(run_dir)
        self.rows = rows[rows["split"] == split].reset_index(drop=True)
        if limit is not None:
            self.rows = self.rows.iloc[:limit]
        if len(self.rows) == 0:
            raise ValueError(f"split {split!r} of {run_dir} has no rows")
        self.source = open_run_source(run_dir)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from data_prep.render import render_mixture

        row = self.rows.iloc[i]
        return torch.from_numpy(render_mixture(row, self.source)), int(row["label"])


def fit_teacher(run_dir: str | os.PathLike, cfg: TeacherConfig, device: str | None = "auto") -> dict[str, Any]:
    """Chapter 3 in one call: build the teacher ``cfg`` asks for (falling back to the CRNN when the pretrained
    wav2vec2 cannot be loaded), train it, score it on val and test, save it to ``RUN_DIR/teacher/``.

    Returns the report that ``teacher.json`` holds (kind, params, accuracies, wall time, why a fallback happened).
    """
    from torch.utils.data import Subset

    from .train import evaluate, eval_loader, load_feature_data

    torch.manual_seed(cfg.seed)
    data = load_feature_data(run_dir)
    kind, fallback = cfg.kind, None
    info: dict[str, Any] = {"n_features": data.n_features, "n_classes": data.n_classes}
    if kind == "wav2vec2":
        try:
            model = build_wav2vec2(data.n_classes)
            train_ds: Dataset = WaveformDataset(run_dir, "train", cfg.max_train_samples)
            val_ds, test_ds = WaveformDataset(run_dir, "val"), WaveformDataset(run_dir, "test")
        except TeacherUnavailable as e:
            kind, fallback = "crnn", str(e)
    if kind == "crnn":
        model = CRNNTeacher(data.n_features, data.n_classes, tuple(cfg.channels), cfg.hidden)
        train_ds, val_ds, test_ds = data.train, data.val, data.test
        info |= {"channels": list(cfg.channels), "hidden": cfg.hidden}
        if cfg.max_train_samples is not None and cfg.max_train_samples < len(train_ds):  # type: ignore[arg-type]
            idx = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(cfg.seed))  # type: ignore
            train_ds = Subset(train_ds, sorted(idx[: cfg.max_train_samples].tolist()))
    fit = train_classifier(model, train_ds, val_ds, cfg, device)
    test = evaluate(model, eval_loader(test_ds, 128))
    info |= {"kind": kind, "input": "waveform" if kind == "wav2vec2" else "logmel", "fallback_reason": fallback,
             "val_acc": fit.best_val_acc, "best_epoch": fit.best_epoch, "test_acc": test["acc"],
             "test_mae": test["mae"], "train_samples": len(train_ds), "wall_s": fit.wall_s,  # type: ignore[arg-type]
             "history": fit.history, "config": {k: (list(v) if isinstance(v, tuple) else v)
                                                for k, v in cfg.__dict__.items()}}
    save_teacher(run_dir, model, info)
    return teacher_info(run_dir)


def fit_largest_student(run_dir: str | os.PathLike, scale: str, cfg: TeacherConfig,
                        device: str | None = "auto") -> dict[str, Any]:
    """Train the largest architecture of chapter 4's space alone on the labels, with the teacher's data and schedule.

    Chapter 3 compares it with the teacher: distillation can only help if the teacher is clearly better.
    """
    from torch.utils.data import Subset

    from .space import SearchSpace, build_model, count_params
    from .train import _load_rule, evaluate, eval_loader, load_feature_data

    data = load_feature_data(run_dir)
    space = SearchSpace.for_scale(scale, data.n_features, data.n_classes, rule=_load_rule(run_dir),
                                  n_frames=data.n_frames)
    torch.manual_seed(cfg.seed)
    model = build_model(space.largest(), data.n_features, data.n_classes, space.attn_dim)
    train_ds: Dataset = data.train
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(train_ds):  # type: ignore[arg-type]
        idx = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(cfg.seed))  # type: ignore
        train_ds = Subset(train_ds, sorted(idx[: cfg.max_train_samples].tolist()))
    fit = train_classifier(model, train_ds, data.val, cfg, device)
    test = evaluate(model, eval_loader(data.test, 128))
    return {"arch": space.largest().describe(), "params": count_params(model), "macs": space.macs(space.largest()),
            "val_acc": fit.best_val_acc, "test_acc": test["acc"], "test_mae": test["mae"], "wall_s": fit.wall_s,
            "history": fit.history}
