"""Dynamic mixing for the teacher (chapter 3): fresh training mixtures from the training speakers, every epoch.

ERSAM's teacher (wav2vec2) has heard far more speech than any student. The offline stand-in is more *mixtures*:
the same recipe generator as chapter 1 (:func:`data_prep.manifest.make_split`), on the same training speakers of
the same sources, with new seeds. Each *round* is a fresh training set of the training split's size, balanced on
the label like it, rendered once and standardised with the training split's statistics, so that epoch ``e`` of the
teacher reads round ``e mod (rounds + 1)`` (round 0 is the training split itself): the teacher sees ``rounds + 1``
times the students' mixtures for the same number of training steps. The students (chapter 4) and the largest subnet
trained alone (chapter 3's yardstick) keep the training split. ``mix_sources`` (for example ``("librimini",)``)
draws the extra rounds from some of the training sources only, each then filling an equal share of every class;
such rounds live in their own folder, ``pool/<sources>/`` (chapter 3's exercise 5, ``benchmarks/archive/``).

Layout under ``RUN_DIR/teacher/pool/``: ``round_<r>.npy`` float16 (N, F, T), ``round_<r>_y.npy`` int64 labels,
``round_<r>.parquet`` the recipes (render any of them with :func:`data_prep.render.render_mixture`), and
``round_<r>.json``, written last, with the content key and the arrays' SHA-256: a round whose marker matches is
reused, so an interrupted build resumes at the first missing round.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ersam_lib.core.io import atomic_path, atomic_write_json, load_array, read_json, sha256_file
from ersam_lib.core.progress import progress
from ersam_lib.core.repro import derived_seed
from ersam_lib.core.rundir import damaged, stage_dir

from .build import load_dataset_info, open_run_source
from .config import DataConfig, FeatureConfig
from .features import feature_meta, load_features, render_features, standardize
from .manifest import make_split, plan_splits, shares
from .sources.base import SpeechSource

__all__ = ["EpochRounds", "build_rounds", "pool_dir"]

POOL_STREAM = 7919  # keeps the rounds' seeds apart from chapter 1's (derived_seed(seed, split, source, attempt))


def pool_dir(run_dir: str | os.PathLike, mix_sources: tuple[str, ...] | None = None) -> Path:
    """``RUN_DIR/teacher/pool``: where the teacher's extra rounds of mixtures live (``pool/<a+b>`` for rounds drawn
    from the training sources ``mix_sources`` only)."""
    root = stage_dir(run_dir, "teacher") / "pool"
    return root / "+".join(sorted(mix_sources)) if mix_sources else root


def round_key(run_dir: str | os.PathLike, r: int, mix_sources: tuple[str, ...] | None = None) -> str:
    """Content key of round ``r``: the training features' key (data, source, front end), the round's index and the
    sources it draws from (when not all)."""
    content: dict[str, Any] = {"features": feature_meta(run_dir)["key"], "round": r, "format": 1}
    if mix_sources:
        content["sources"] = sorted(mix_sources)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def round_recipes(run_dir: str | os.PathLike, r: int, sources: SpeechSource | None = None,
                  mix_sources: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Round ``r``'s recipes: chapter 1's generator on the training split's speakers and sources, new seeds
    (``sources``: the run's reopened sources, when the caller has them open already; ``mix_sources``: draw from
    these training sources only). Raises ``ValueError`` for a source the training split does not use."""
    cfg = DataConfig.from_json(load_dataset_info(run_dir)["config"])
    sources = sources or open_run_source(run_dir)
    groups = plan_splits(cfg, sources)["train"]
    if mix_sources:
        unknown = sorted(set(mix_sources) - set(groups))
        if unknown:
            raise ValueError(f"mix_sources {unknown}: the training split's sources are {sorted(groups)}")
        groups = {name: spk for name, spk in groups.items() if name in mix_sources}
    fresh = dataclasses.replace(cfg, seed=derived_seed(cfg.seed, POOL_STREAM, r))
    by_speaker = sources.speakers()
    parts = [make_split(fresh, sources, "train", spk, by_speaker, quota=q, source_name=name)
             for (name, spk), q in zip(groups.items(), shares(cfg.quota("train"), len(groups))) if q > 0]
    df = pd.concat(parts, ignore_index=True)
    df["example_id"] = [f"round{r}-{i:06d}" for i in range(len(df))]
    return df


def build_round(run_dir: str | os.PathLike, r: int, workers: int = 2, shard_size: int = 256,
                mix_sources: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Draw, render and standardise round ``r`` (r >= 1) into :func:`pool_dir` unless it is there intact.

    Returns its marker (key, size, timings). Chapter 1 must have run (its features give the statistics).
    """
    if r < 1:
        raise ValueError(f"round 0 is the training split itself; extra rounds start at 1, got {r}")
    folder, key = pool_dir(run_dir, mix_sources), round_key(run_dir, r, mix_sources)
    marker_path = folder / f"round_{r}.json"
    if _intact(folder, r, key):
        return read_json(marker_path) | {"reused": True}
    marker_path.unlink(missing_ok=True)  # not done until rebuilt
    t0 = time.perf_counter()
    source = open_run_source(run_dir)
    recipes = round_recipes(run_dir, r, source, mix_sources)
    t_recipes = time.perf_counter() - t0
    meta = feature_meta(run_dir)
    features = FeatureConfig(**meta["feature_config"])
    rows = recipes.to_dict("records")
    shards = [rows[i:i + shard_size] for i in range(0, len(rows), shard_size)]
    bar = progress(total=len(rows), desc=f"teacher round {r}: mixing + features")
    raw: list[np.ndarray] = []
    if workers > 1 and len(shards) > 1:
        with ProcessPoolExecutor(min(workers, len(shards)), mp_context=get_context("fork")) as pool:
            for feats in pool.map(render_features, shards, [source] * len(shards), [features] * len(shards)):
                raw.append(feats["logmel"])
                bar.update(len(raw[-1]))
    else:
        for shard in shards:
            raw.append(render_features(shard, source, features)["logmel"])
            bar.update(len(shard))
    bar.close()
    x = standardize(np.concatenate(raw), meta["mean"], meta["std"])
    with atomic_path(folder / f"round_{r}.npy") as tmp:
        np.save(tmp, x)
    with atomic_path(folder / f"round_{r}_y.npy") as tmp:
        np.save(tmp, recipes["label"].to_numpy(np.int64))
    with atomic_path(folder / f"round_{r}.parquet") as tmp:
        recipes.to_parquet(tmp, index=False)
    names = [f"round_{r}.npy", f"round_{r}_y.npy", f"round_{r}.parquet"]
    marker = {"key": key, "round": r, "n": len(recipes), "shape": list(x.shape[1:]),
              "counts": recipes["label"].value_counts().sort_index().astype(int).to_dict(),
              "recipes_s": t_recipes, "render_s": time.perf_counter() - t0 - t_recipes,
              "sha256": {n: sha256_file(folder / n) for n in names}}
    atomic_write_json(marker_path, marker)
    return marker | {"reused": False}


def _intact(folder: Path, r: int, key: str) -> bool:
    try:
        marker = read_json(folder / f"round_{r}.json")
        return marker["key"] == key and all(sha256_file(folder / n) == h for n, h in marker["sha256"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # missing, damaged or stale: rebuild
        return False


def build_rounds(run_dir: str | os.PathLike, rounds: int, workers: int = 2,
                 mix_sources: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Rounds 1..``rounds`` (:func:`build_round` each); their markers, in order (chapter 3)."""
    return [build_round(run_dir, r, workers, mix_sources=mix_sources) for r in range(1, rounds + 1)]


def load_round(run_dir: str | os.PathLike, r: int,
               mix_sources: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Round ``r``'s standardised features (memory-mapped) and labels, checked against its marker."""
    folder = pool_dir(run_dir, mix_sources)
    if not _intact(folder, r, round_key(run_dir, r, mix_sources)):
        raise damaged(folder / f"round_{r}.json", run_dir, "teacher", "is missing, stale or does not match its arrays")
    return load_array(folder / f"round_{r}.npy", mmap_mode="r"), load_array(folder / f"round_{r}_y.npy")


try:
    import torch
    from torch.utils.data import Dataset

    class EpochRounds(Dataset):
        """The teacher's training set under dynamic mixing: epoch ``e`` reads round ``e mod (rounds + 1)``.

        Round 0 is chapter 1's training split; :meth:`set_epoch` (called by
        :func:`ersam_lib.training.fit.train_classifier` before each epoch) switches rounds. Every round has the training
        split's size and class balance, so an epoch costs the same whatever round it reads.
        """

        def __init__(self, run_dir: str | os.PathLike, rounds: int,
                     mix_sources: tuple[str, ...] | None = None) -> None:
            train = load_features(run_dir, "train")
            self.sets = [(train.x, train.y)] + [load_round(run_dir, r, mix_sources) for r in range(1, rounds + 1)]
            self.epoch = 0
            self.n = min(len(y) for _, y in self.sets)

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            x, y = self.sets[self.epoch % len(self.sets)]
            return torch.from_numpy(np.asarray(x[i], dtype=np.float32)), int(y[i])
except ImportError:  # pragma: no cover - torch is a dependency of the book
    pass
