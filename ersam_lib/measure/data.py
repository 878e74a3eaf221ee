"""Chapter 1's data as torch datasets: the cached features, rendered waveforms, and one subset rule (chapters 3-6).

- :class:`FeatureData` / :func:`load_feature_data`: the train/val/test log-mel (or |STFT|) features of a run, and
  its real-speech evaluation splits (``real_val``, ``real_test``, ``real_test_other``) in ``extra``;
- :class:`WaveformDataset`: mixtures rendered on the fly from the manifest, for waveform models (wav2vec2);
- :class:`PairedDataset`: the students' features beside the teacher's own input (a waveform teacher in chapter 4);
- :func:`subset`: the one way any trainer caps its training set (``max_train_samples``), so that the teacher,
  the largest student and the supernet see the same mixtures for the same seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from data_prep.build import load_manifest, open_run_source
from data_prep.features import FeatureDataset, feature_splits, load_features
from data_prep.render import render_mixture

__all__ = ["FeatureData", "PairedDataset", "WaveformDataset", "load_feature_data", "paired_with_waveforms", "subset"]


@dataclass
class FeatureData:
    """Chapter 1's features as torch datasets, with the sizes the models need (chapters 3-5).

    ``train``/``val`` are the training distribution, ``test`` the primary source's test split (synthetic voices at
    smoke and tutorial scale); ``extra`` holds the real-speech splits the run built (``real_val``, ``real_test``,
    ``real_test_other``), all standardised with the same train statistics.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    n_features: int
    n_frames: int
    classes: list[str]
    extra: dict[str, Dataset] = field(default_factory=dict)
    key: str = ""  # the features' content key (meta.json): what models trained on them record as provenance

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def splits(self) -> dict[str, Dataset]:
        """Every split by name: train, val, test, then the real ones."""
        return {"train": self.train, "val": self.val, "test": self.test, **self.extra}


def load_feature_data(run_dir: str | os.PathLike, kind: str = "logmel") -> FeatureData:
    """Every split of ``RUN_DIR``'s features as :class:`data_prep.features.FeatureDataset` (chapter 1 must have
    run): train/val/test, and the real splits in ``extra``."""
    names = feature_splits(run_dir, kind)
    sets = {s: load_features(run_dir, s, kind) for s in names}
    _, n_features, n_frames = sets["train"].x.shape
    base = ("train", "val", "test")
    return FeatureData(*(FeatureDataset(sets[s]) for s in base), int(n_features), int(n_frames),
                       list(sets["train"].classes), {s: FeatureDataset(sets[s]) for s in names if s not in base},
                       sets["train"].meta["key"])


def subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """``n`` items of ``ds`` drawn without replacement with ``seed`` (kept in index order); all of it if ``n`` is
    ``None`` or not smaller than ``len(ds)``."""
    if n is None or n >= len(ds):  # type: ignore[arg-type]
        return ds
    if n < 1:
        raise ValueError(f"a subset needs n >= 1, got {n}")
    idx = np.random.default_rng(seed).permutation(len(ds))[:n]  # type: ignore[arg-type]
    return Subset(ds, sorted(idx.tolist()))


class WaveformDataset(Dataset):
    """Items ``(float32 waveform (samples,), label)`` rendered on the fly from chapter 1's manifest (chapter 3).

    The wav2vec2 teacher reads waveforms, not features; rendering is deterministic, so nothing is cached.
    """

    def __init__(self, run_dir: str | os.PathLike, split: str, limit: int | None = None):
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
        row = self.rows.iloc[i]
        return torch.from_numpy(render_mixture(row, self.source)), int(row["label"])


class PairedDataset(Dataset):
    """Items ``(x, y, teacher_x)``: the students' features and the teacher's input for the same mixture (chapter 4).

    Both datasets list one split's mixtures in the manifest's order (chapter 1 writes the features that way); a label
    that differs between them means they do not, and raises rather than distilling from the wrong mixture.
    """

    def __init__(self, features: Dataset, teacher_inputs: Dataset):
        n, m = len(features), len(teacher_inputs)  # type: ignore[arg-type]
        if n != m:
            raise ValueError(f"{n} feature items but {m} teacher inputs")
        self.features, self.teacher_inputs = features, teacher_inputs

    def __len__(self) -> int:
        return len(self.features)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        (x, y), (tx, ty) = self.features[i], self.teacher_inputs[i]
        if y != ty:
            raise ValueError(f"item {i}: features say label {y}, the teacher's input says {ty} (not the same mixture)")
        return x, y, tx


def paired_with_waveforms(run_dir: str | os.PathLike, data: FeatureData, split: str) -> PairedDataset:
    """``split``'s features beside its mixtures rendered as waveforms: a waveform teacher's batches (chapter 4)."""
    return PairedDataset(data.splits[split], WaveformDataset(run_dir, split))
