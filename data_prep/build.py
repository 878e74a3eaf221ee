"""One call builds LibriSpeech-SAM into ``RUN_DIR/data`` (chapter 1): source -> manifest -> audio -> features.

Bad input fails before anything is written to the run folder (missing root, too few speakers for K, a corrupt
file with ``on_error="raise"``); every file is written atomically; rerunning with the same config resumes.

What is reused is checked, never assumed: the manifest only when ``config.json`` (written after it, its "done"
marker) records the same config and speech source and the Parquet file still has the recorded hash; each feature
kind only when its content key and array hashes match (:mod:`data_prep.features`). Anything else is rebuilt, so
rerunning chapter 1 repairs a damaged or stale data folder. ``dataset.json`` is removed when a build starts and
written when it ends: it marks the whole data set done.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ersam_lib.core.io import atomic_path, atomic_write_json, atomic_write_text, file_lock, read_json, to_plain
from ersam_lib.core.rundir import damaged, read_run_json, require, run_file, stage_dir

from .config import DataConfig
from .features import build_features
from .labels import class_names
from .manifest import make_manifest, manifest_hash, plan_splits
from .sources import SourceSet, SpeechSource, open_sources, reopen_source, reopen_sources


@dataclass
class BuildReport:
    """What a build did and how fast (the benchmark prints it; chapter 1 records it). Its repr leaves out
    ``data_dir``, an absolute path of the build machine, so that chapter 1's page does not show it."""

    data_dir: str = field(repr=False)
    n_mixtures: int
    n_speakers: int
    n_utterances: int
    source_s: float
    manifest_s: float
    render_s: float
    total_s: float
    reused_manifest: bool

    @property
    def mixtures_per_s(self) -> float:
        return self.n_mixtures / self.render_s if self.render_s > 0 else float("nan")


def build(cfg: DataConfig, run_dir: str | os.PathLike) -> BuildReport:
    """Build the data set described by ``cfg`` into ``RUN_DIR/data`` and return a report.

    Two builds into one folder take turns (a lock on the folder ``RUN_DIR/data``): the second waits, then checks
    what the first left, so the folder always holds one build's manifest, features and record, never a mix."""
    cfg.validate()
    t0 = time.perf_counter()
    source = open_sources(cfg)
    fingerprint = to_plain(source.fingerprint())
    t_source = time.perf_counter() - t0
    t1 = time.perf_counter()
    manifest = _cached_manifest(run_dir, cfg, fingerprint)
    if manifest is None:
        manifest = make_manifest(cfg, source)  # raises before anything is written
    t_manifest = time.perf_counter() - t1
    data_dir = stage_dir(run_dir, "data")
    with file_lock(data_dir, waiting=f"[data_prep] another build is writing {data_dir}; waiting for it to end"):
        reused = _cached_manifest(run_dir, cfg, fingerprint) is not None  # (another build may have written it)
        sha = manifest_hash(manifest)
        run_file(run_dir, "dataset").unlink(missing_ok=True)  # the data set is not done until this build ends
        if not reused:
            run_file(run_dir, "data_config").unlink(missing_ok=True)
            with atomic_path(run_file(run_dir, "manifest")) as tmp:
                manifest.to_parquet(tmp, index=False)
            atomic_write_text(run_file(run_dir, "manifest_sha"), f"{sha}  manifest.parquet\n")
            atomic_write_json(run_file(run_dir, "data_config"), _manifest_marker(cfg, fingerprint, sha))  # last
        feats = build_features(run_dir, manifest, source, cfg.features, cfg.feature_kinds, sha, cfg.workers,
                               cfg.shard_size)
        report = BuildReport(str(data_dir), len(manifest), int(source.index()["speaker"].nunique()),
                             len(source.index()), t_source, t_manifest, feats["render_s"],
                             time.perf_counter() - t0, reused)
        atomic_write_json(run_file(run_dir, "dataset"), _dataset_json(cfg, manifest, source, sha, report))
    return report


def _manifest_marker(cfg: DataConfig, fingerprint: dict[str, Any], sha: str) -> dict[str, Any]:
    """``config.json``: the config and speech source the manifest was made from, and the manifest's hash."""
    return {"config": cfg.to_json(), "source": fingerprint, "manifest_sha256": sha}


def _cached_manifest(run_dir: str | os.PathLike, cfg: DataConfig, fingerprint: dict[str, Any]) -> pd.DataFrame | None:
    """The manifest of an earlier build from the same config and source, if intact (resume); else ``None``."""
    config, manifest = run_file(run_dir, "data_config"), run_file(run_dir, "manifest")
    try:
        marker = read_json(config)
        if marker != _manifest_marker(cfg, fingerprint, marker.get("manifest_sha256")):
            return None
        df = pd.read_parquet(manifest)
    except Exception:  # missing, damaged or from an older build: anything unreadable is rebuilt
        return None
    return df if manifest_hash(df) == marker["manifest_sha256"] else None


def _dataset_json(cfg: DataConfig, manifest: pd.DataFrame, source: SourceSet, sha: str,
                  report: BuildReport) -> dict[str, Any]:
    classes = class_names(cfg.class_set, cfg.max_count)
    counts = {s: {c: int(((manifest["split"] == s) & (manifest["label"] == i)).sum()) for i, c in enumerate(classes)}
              for s in cfg.splits}
    plan = plan_splits(cfg, source)
    speakers = {s: sorted(spk for g in groups.values() for spk in g) for s, groups in plan.items()}
    return {"classes": classes, "class_set": cfg.class_set, "K": cfg.max_count, "sample_rate": cfg.sample_rate,
            "duration_s": cfg.duration_s, "splits": list(cfg.splits), "counts": counts,
            "source": source.member(cfg.source).describe(), "sources": source.describe()["members"],
            "train_sources": list(cfg.training_sources), "real_source": cfg.real_source,
            "split_sources": {s: list(groups) for s, groups in plan.items()},
            "speakers": {s: len(v) for s, v in speakers.items()}, "speaker_lists": speakers,
            "manifest_sha256": sha, "source_fingerprint": to_plain(source.fingerprint()),
            "feature_kinds": list(cfg.feature_kinds), "config": cfg.to_json(),
            "timings": {"source_s": report.source_s, "manifest_s": report.manifest_s, "render_s": report.render_s,
                        "total_s": report.total_s}}


def load_manifest(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The manifest chapter 1 wrote (chapters 3 and 6 render waveforms from it), checked against ``dataset.json``."""
    info = load_dataset_info(run_dir)
    path = require(run_dir, "manifest")
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise damaged(path, run_dir, "data", f"is not a readable Parquet file ({str(e).splitlines()[0][:120]})") from None
    if manifest_hash(df) != info.get("manifest_sha256"):
        raise damaged(path, run_dir, "data", "does not match the manifest_sha256 that dataset.json recorded")
    return df


def load_dataset_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``dataset.json``: classes, K, counts per split and class, the source, speakers per split."""
    return read_run_json(run_dir, "dataset")


def open_run_source(run_dir: str | os.PathLike) -> SpeechSource:
    """Reopen the speech sources a run was built from (a :class:`SourceSet`), for
    :func:`data_prep.render.render_mixture`; a run built before source sets gets its single source back.

    The sources must still serve the same audio (their fingerprint, e.g. the TTS corpus hash, is compared with the
    one ``dataset.json`` recorded): rendering the manifest from other audio would pair it with the wrong labels.
    """
    info = load_dataset_info(run_dir)
    cfg = DataConfig.from_json(info["config"])
    source = reopen_source(info["source"], cfg) if "sources" not in info else reopen_sources(info["sources"], cfg)
    if "source_fingerprint" in info and to_plain(source.fingerprint()) != info["source_fingerprint"]:
        raise damaged(run_file(run_dir, "dataset"), run_dir, "data", f"was built from speech that has changed since "
                      f"(the {source.name} source no longer has the recorded fingerprint)")
    return source


def add_features(run_dir: str | os.PathLike, kinds: tuple[str, ...] = ("stft",), workers: int = 1) -> dict:
    """Build further feature kinds (e.g. CountNet's |STFT|) for an existing run (on request, chapter 5)."""
    info = load_dataset_info(run_dir)
    cfg = DataConfig.from_json(info["config"])
    manifest = load_manifest(run_dir)
    bad = set(kinds) - {"logmel", "stft"}
    if bad or not kinds:
        raise ValueError(f"feature kinds must be logmel and/or stft, got {list(kinds)}")
    data_dir = stage_dir(run_dir, "data")
    with file_lock(data_dir, waiting=f"[data_prep] another build is writing {data_dir}; waiting"):
        return build_features(run_dir, manifest, open_run_source(run_dir), cfg.features, kinds,
                              info["manifest_sha256"], workers, cfg.shard_size)


def build_tiny(run_dir: str | os.PathLike, seed: int = 0, **overrides) -> BuildReport:
    """A few-second build (K = 2, 36 mixtures) for the unit tests of later chapters."""
    return build(DataConfig.tiny(seed=seed, **overrides), run_dir)
