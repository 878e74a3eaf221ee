"""The feature cache that chapters 2-6 train on (chapter 1): log-mel (default) and CountNet's |STFT|.

Layout under ``RUN_DIR/data/features/<kind>/``: ``<split>.npy`` float16 (N, F, T) for every split of the manifest
(``train``, ``val``, ``test`` and the real ``real_val``, ``real_test``, ``real_test_other`` when built), all
standardised with the train split's per-band mean and std, ``<split>_y.npy`` int64 labels, ``meta.json`` (shape,
statistics, counts per split, the content key, the SHA-256 of every array; written last, it marks the kind
complete). The content key (:func:`feature_key`) hashes what the features are made from: the manifest, the speech
source's audio and the front-end config; a cache is reused only when its key matches and its arrays still have their
recorded hashes, otherwise it is rebuilt. While building, raw shards go to ``.parts/`` (each written atomically, so
an interrupted build resumes at the first missing shard; ``.parts/key`` says which key they belong to, and shards of
another key are thrown away, never mixed).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ersam_lib.core.io import (ArtifactError, allocate, atomic_path, atomic_write_json, atomic_write_text, load_array,
                               read_json, sha256_file, to_plain)
from ersam_lib.core.progress import progress
from ersam_lib.core.rundir import check_made_from, damaged, feature_dir, read_run_json, run_file

from .config import ALL_SPLITS, FeatureConfig
from .render import render_mixture
from .sources.base import SpeechSource

KINDS: tuple[str, ...] = ("logmel", "stft")
SAMPLE_RATE = 16_000
LOG_EPS = 1e-6  # log(mel power + LOG_EPS): silence's floor in the log domain, in both front ends
FORMAT = 2  # the layout of meta.json; caches of another format are rebuilt


def feature_key(manifest_sha: str, source: dict[str, Any], cfg: FeatureConfig, kind: str) -> str:
    """The content key of one feature kind: SHA-256 of what it is made from (manifest, audio, front end)."""
    blob = json.dumps({"format": FORMAT, "kind": kind, "manifest_sha256": manifest_sha, "source": source,
                       "features": dataclasses.asdict(cfg)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def hann(win_length: int) -> np.ndarray:
    """The periodic Hann window of ``win_length`` samples (``torch.stft``'s convention), float64: the window of both
    front ends (this module's and :class:`ersam_lib.measure.frontend.LogMelFrontEnd`)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)


@functools.lru_cache(maxsize=8)
def _window(win_length: int, n_fft: int) -> np.ndarray:
    # torch.stft's convention: the Hann window of win_length, zero-padded to n_fft in the centre.
    w = np.zeros(n_fft, np.float32)
    left = (n_fft - win_length) // 2
    w[left:left + win_length] = hann(win_length)
    return w


@functools.lru_cache(maxsize=8)
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) HTK mel filters, from torchaudio (the same as ``MelSpectrogram``'s)."""
    import torchaudio

    fb = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate)
    return fb.numpy().astype(np.float32)


def stft_magnitude(audio: np.ndarray, n_fft: int, hop: int, win_length: int | None = None) -> np.ndarray:
    """|STFT| (n_fft // 2 + 1, frames) of 1-D audio, centred with reflect padding like ``torch.stft``."""
    win_length = win_length or n_fft
    padded = np.pad(np.asarray(audio, np.float32), n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return np.abs(np.fft.rfft(frames * _window(win_length, n_fft), axis=-1)).T.astype(np.float32)


def logmel(audio: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """log(mel power + LOG_EPS), shape (n_mels, frames): torchaudio's ``MelSpectrogram`` then a log."""
    power = stft_magnitude(audio, cfg.n_fft, cfg.hop_length, cfg.win_length) ** 2
    return np.log(mel_filterbank(cfg.n_fft, cfg.n_mels).T @ power + LOG_EPS)


def compute_features(audio: np.ndarray, kind: str, cfg: FeatureConfig) -> np.ndarray:
    """Unstandardised features of one waveform: ``logmel`` (n_mels, T) or ``stft`` (201, 501) as CountNet."""
    if kind == "logmel":
        return logmel(audio, cfg)
    if kind == "stft":
        return stft_magnitude(audio, cfg.stft_n_fft, cfg.stft_hop)
    raise ValueError(f"unknown feature kind {kind!r}; expected one of {KINDS}")


def render_features(rows: list[dict], source: SpeechSource, cfg: FeatureConfig,
                    kinds: tuple[str, ...] = ("logmel",)) -> dict[str, np.ndarray]:
    """Render each manifest row and compute each kind's raw (unstandardised) features: ``kind -> (N, F, T)``
    float32 (chapter 1's cache; chapter 3's dynamic mixing, :mod:`data_prep.dynamic`)."""
    from threadpoolctl import threadpool_limits

    feats: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    # One BLAS thread: the matrices are small, and threads fighting over 2 shared cores made it 20x slower.
    with threadpool_limits(1):
        for row in rows:
            audio = render_mixture(row, source)
            for k in kinds:
                feats[k].append(compute_features(audio, k, cfg))
    return {k: np.stack(v) for k, v in feats.items()}


def standardize(x: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """``(N, F, T)`` raw features standardised per band with the training split's ``mean``/``std`` (``meta.json``),
    as float16 (the cache's dtype)."""
    mean, std = np.asarray(mean)[None, :, None], np.asarray(std)[None, :, None]
    return ((np.asarray(x, np.float32) - mean) / std).astype(np.float16)


def _render_shard(rows: list[dict], source: SpeechSource, cfg: FeatureConfig, kinds: tuple[str, ...],
                  paths: list[Path]) -> float:
    """Render the mixtures of one shard and write each kind's raw features (float16) atomically; returns seconds."""
    t0 = time.perf_counter()
    feats = render_features(rows, source, cfg, kinds)
    for k, path in zip(kinds, paths):
        with atomic_path(path) as tmp:
            np.save(tmp, feats[k].astype(np.float16))
    return time.perf_counter() - t0


def build_features(run_dir: str | os.PathLike, manifest: pd.DataFrame, source: SpeechSource, cfg: FeatureConfig,
                   kinds: tuple[str, ...], manifest_sha: str, workers: int = 1, shard_size: int = 512) -> dict:
    """Render every mixture of ``manifest`` once and write the feature cache of each kind (resumable).

    A kind whose cache has the current content key and intact arrays is kept; any other is rebuilt.
    """
    source_id = to_plain(source.fingerprint())
    keys = {k: feature_key(manifest_sha, source_id, cfg, k) for k in kinds}
    kinds = tuple(k for k in kinds if not _complete(feature_dir(run_dir, k), keys[k]))
    if not kinds:
        return {"render_s": 0.0, "n_rendered": 0}
    parts = {}
    for k in kinds:
        (feature_dir(run_dir, k) / "meta.json").unlink(missing_ok=True)  # not complete until rebuilt
        parts[k] = _parts_dir(feature_dir(run_dir, k), keys[k])
    records = manifest.to_dict("records")
    shards = [(i, records[i:i + shard_size]) for i in range(0, len(records), shard_size)]
    todo = [(i, rows) for i, rows in shards if not all((parts[k] / f"{i:06d}.npy").exists() for k in kinds)]
    t0 = time.perf_counter()
    bar = progress(total=len(records), initial=len(records) - sum(len(r) for _, r in todo), desc="mixing + features")
    args = [(rows, source, cfg, kinds, [parts[k] / f"{i:06d}.npy" for k in kinds]) for i, rows in todo]
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=get_context("fork")) as pool:
            for (_, rows), _ in zip(todo, pool.map(_render_shard, *zip(*args))):
                bar.update(len(rows))
    else:
        for a in args:
            _render_shard(*a)
            bar.update(len(a[0]))
    bar.close()
    render_s = time.perf_counter() - t0
    for k in kinds:
        _finalize(feature_dir(run_dir, k), manifest, [parts[k] / f"{i:06d}.npy" for i, _ in shards],
                  {"kind": k, "key": keys[k], "manifest_sha256": manifest_sha, "source": source_id,
                   "feature_config": dataclasses.asdict(cfg)})
    return {"render_s": render_s, "n_rendered": sum(len(r) for _, r in todo)}


def _parts_dir(folder: Path, key: str) -> Path:
    """``folder/.parts`` for the shards of ``key``; shards left by a build of another key are deleted first."""
    parts = folder / ".parts"
    stamp = parts / "key"
    if parts.exists() and (not stamp.exists() or stamp.read_text().strip() != key):
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    if not stamp.exists():
        atomic_write_text(stamp, key + "\n")
    return parts


def _complete(folder: Path, key: str) -> bool:
    """The cache in ``folder`` has content key ``key`` and every array still has its recorded SHA-256."""
    try:
        meta = read_json(folder / "meta.json")
        return meta["key"] == key and all(sha256_file(folder / name) == digest
                                          for name, digest in meta["sha256"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # missing, damaged or old: rebuild
        return False


def _finalize(folder: Path, manifest: pd.DataFrame, shard_paths: list[Path], provenance: dict[str, Any]) -> None:
    """Standardise with train statistics (per band, over examples and frames), write one array per split, then
    ``meta.json`` (the provenance, the statistics and every array's SHA-256) as the "done" marker."""
    raw = [load_array(p, mmap_mode="r") for p in shard_paths]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in raw])])
    split_of = manifest["split"].to_numpy()
    train_idx = np.flatnonzero(split_of == "train")
    s1 = s2 = None
    n = 0
    for r, a in zip(raw, offsets[:-1]):
        sel = train_idx[(train_idx >= a) & (train_idx < a + len(r))] - a
        x = np.asarray(r[sel], np.float64)
        s1 = x.sum(axis=(0, 2)) if s1 is None else s1 + x.sum(axis=(0, 2))
        s2 = (x**2).sum(axis=(0, 2)) if s2 is None else s2 + (x**2).sum(axis=(0, 2))
        n += x.shape[0] * x.shape[2]
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 1e-12))
    shape = raw[0].shape[1:]
    splits = [s for s in ALL_SPLITS if (split_of == s).any()]
    for split in splits:
        idx = np.flatnonzero(split_of == split)
        with atomic_path(folder / f"{split}.npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(idx), *shape))
            allocate(tmp)  # a full disk: an error naming the file, not a SIGBUS at the first write
            for j0 in range(0, len(idx), 1024):
                rows = idx[j0:j0 + 1024]
                shard = np.searchsorted(offsets, rows, side="right") - 1
                out[j0:j0 + len(rows)] = standardize(np.stack([raw[s][i - offsets[s]] for s, i in zip(shard, rows)]),
                                                     mean, std)
            out.flush()
            del out
        with atomic_path(folder / f"{split}_y.npy") as tmp:
            np.save(tmp, manifest.loc[idx, "label"].to_numpy(np.int64))
    names = [f"{s}{suffix}.npy" for s in splits for suffix in ("", "_y")]
    atomic_write_json(folder / "meta.json", provenance | {
        "format": FORMAT, "shape": [int(s) for s in shape], "mean": mean.tolist(), "std": std.tolist(),
        "counts": {s: int((split_of == s).sum()) for s in splits},
        "sha256": {name: sha256_file(folder / name) for name in names}})
    shutil.rmtree(folder / ".parts", ignore_errors=True)


@dataclass
class FeatureSet:
    """Features of one split: ``x`` float16 (N, F, T) standardised, ``y`` int64 (N,), class names, metadata."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)


def load_features(run_dir: str | os.PathLike, split: str, kind: str = "logmel", mmap: bool = True) -> FeatureSet:
    """The cached features of ``split`` written by chapter 1 (memory-mapped unless ``mmap=False``).

    Used by chapters 2-6. ``split`` is one of ``train``, ``val``, ``test``, or a real split the run built
    (``real_val``, ``real_test``, ``real_test_other``). ``kind="stft"`` exists only if the build asked for it
    (``DataConfig(feature_kinds=("logmel", "stft"))`` or :func:`data_prep.build.add_features`). The arrays are
    checked against ``meta.json`` (shape, SHA-256) and ``meta.json`` against ``dataset.json`` (the content key);
    a mismatch names the file and the command that rebuilds it.
    """
    if split not in ALL_SPLITS:
        raise ValueError(f"split must be one of {ALL_SPLITS}, got {split!r}")
    dataset = read_run_json(run_dir, "dataset")
    meta = feature_meta(run_dir, kind)
    folder = feature_dir(run_dir, kind)
    try:
        expected = feature_key(dataset["manifest_sha256"], dataset["source_fingerprint"],
                               FeatureConfig(**dataset["config"]["features"]), kind)
    except (KeyError, TypeError) as e:
        raise damaged(run_file(run_dir, "dataset"), run_dir, "data", f"lacks {e} (an older build)") from None
    # a cache without a key is as stale as one with another key
    check_made_from(folder / "meta.json", run_dir, "data", meta.get("key") or "none", lambda: expected)
    if split not in meta.get("counts", {}):
        raise ValueError(f"{run_dir} has no {split!r} split (built: {', '.join(meta.get('counts', {}))}); the real "
                         f"splits need DataConfig(real_source='librimini')")
    n = meta["counts"][split]
    x = _checked_array(folder / f"{split}.npy", (n, *meta["shape"]), np.float16, meta, run_dir, mmap)
    y = _checked_array(folder / f"{split}_y.npy", (n,), np.int64, meta, run_dir, False)
    return FeatureSet(x=x, y=y, classes=list(dataset["classes"]), meta=meta | {"split": split})


def feature_meta(run_dir: str | os.PathLike, kind: str = "logmel") -> dict[str, Any]:
    """``meta.json`` of one feature kind; its ``key`` is the content key later chapters record as provenance."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = feature_dir(run_dir, kind) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"{path.parent} has no {kind!r} features; build them with "
                                f"data_prep.build.add_features(run_dir, ({kind!r},))")
    try:
        meta = read_json(path)
    except ArtifactError as e:
        raise damaged(path, run_dir, "data", str(e)) from None
    if meta.get("format") != FORMAT:
        raise damaged(path, run_dir, "data", "was written by an older version of the book")
    return meta


def _checked_array(path: Path, shape: tuple, dtype: Any, meta: dict, run_dir: str | os.PathLike,
                   mmap: bool) -> np.ndarray:
    try:
        arr = load_array(path, mmap_mode="r" if mmap else None)
    except (FileNotFoundError, ArtifactError) as e:
        raise damaged(path, run_dir, "data", str(e)) from None
    if arr.shape != tuple(shape) or arr.dtype != dtype:
        raise damaged(path, run_dir, "data", f"holds {arr.dtype} {arr.shape}, but meta.json says "
                      f"{np.dtype(dtype)} {tuple(shape)}")
    if sha256_file(path) != meta["sha256"].get(path.name):
        raise damaged(path, run_dir, "data", "does not match the SHA-256 that meta.json recorded (changed or damaged "
                      "since it was built)")
    return arr


def feature_splits(run_dir: str | os.PathLike, kind: str = "logmel") -> list[str]:
    """The splits whose ``kind`` features a run holds, in manifest order (chapters 3-6 score every real one)."""
    counts = feature_meta(run_dir, kind).get("counts", {})
    return [s for s in ALL_SPLITS if s in counts]


try:
    import torch
    from torch.utils.data import Dataset

    class FeatureDataset(Dataset):
        """A torch ``Dataset`` over a :class:`FeatureSet`: items are (float32 tensor (F, T), int label)."""

        def __init__(self, features: FeatureSet) -> None:
            self.features = features

        def __len__(self) -> int:
            return len(self.features)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return torch.from_numpy(np.asarray(self.features.x[i], dtype=np.float32)), int(self.features.y[i])
except ImportError:  # pragma: no cover - torch is a dependency of the book
    pass
