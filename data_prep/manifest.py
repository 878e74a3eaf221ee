"""The data set as a manifest of mixing recipes (chapter 1): speaker-disjoint splits, balanced labels, a hash.

A row holds everything needed to render its audio deterministically (:func:`data_prep.render.render_mixture`):
which utterances of which speakers go where (in 10-ms frames), the per-speaker gains, the background and its SNR,
the output peak level. The label k is computed here, from the VAD tracks of the placed utterances, before any
audio is mixed: k = max over frames of the number of active speakers (:func:`data_prep.labels.max_concurrent`).

Which speakers feed which split is decided once, per source, before any recipe is drawn (:func:`plan_splits`), so
no speaker is heard in two splits. A source whose speakers have a single utterance (the real train-clean-100
speakers) is *looped* by the fill placement: the trimmed utterance starts at a random point and repeats back to back
until the 5 s are covered, as LibriCount concatenates a speaker's utterances.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ersam_lib.core.progress import progress
from ersam_lib.core.repro import derived_seed

from .config import ALL_SPLITS, SOURCES, SPLITS, DataConfig
from .labels import class_names, class_of, counts_of_class, max_concurrent, overlap_fraction
from .sources import as_source_set
from .sources.base import SourceError, SpeechSource
from .sources.sourceset import SourceSet, namespaced
from .vad import FRAME, to_runs, trim_bounds

Segment = list  # [utt_id, src_frame, n_frames, dst_frame]


def cut_speakers(speakers: list[str], fractions: dict[str, float], seed: int, stream: int = 0) -> dict[str, list[str]]:
    """Shuffle speakers with ``(seed, stream)`` and cut them into consecutive parts of the given shares (the last
    part takes the rest): no speaker is in two parts."""
    order = sorted(speakers)
    perm = np.random.default_rng([seed, stream]).permutation(len(order))
    shuffled = [order[i] for i in perm]
    parts, start = {}, 0
    names = list(fractions)
    for i, name in enumerate(names):
        stop = len(order) if i == len(names) - 1 else start + int(round(fractions[name] * len(order)))
        parts[name] = sorted(shuffled[start:stop])
        start = stop
    return parts


def split_speakers(speakers: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, list[str]]:
    """Shuffle speakers with ``seed`` and cut them into train/val/test: no speaker is in two splits."""
    return cut_speakers(speakers, dict(zip(SPLITS, fractions)), seed, stream=0)


def real_speaker_splits(cfg: DataConfig, source: SpeechSource) -> dict[str, list[str]]:
    """Speakers of the real source per part: train-clean-100 cut by ``real_fractions`` into train, val (usable
    for training only when ``train_sources`` asks) and real_val, real_test (never trained on); test-other speakers
    form real_test_other. Independent of ``train_sources``, so every training choice meets the same real splits."""
    index = source.index()
    other = index["subset"] == "test-other" if "subset" in index else np.zeros(len(index), bool)
    parts = cut_speakers(sorted(index.loc[~other, "speaker"].astype(str).unique()),
                         dict(zip(("train", "val", "real_val", "real_test"), cfg.real_fractions)), cfg.seed, stream=1)
    parts["real_test_other"] = sorted(index.loc[other, "speaker"].astype(str).unique())
    return parts


def plan_splits(cfg: DataConfig, sources: SourceSet) -> dict[str, dict[str, list[str]]]:
    """split -> source -> its speakers (namespaced ids): the speaker-disjoint plan of the whole manifest.

    ``train`` and ``val`` draw from ``cfg.training_sources``; ``test`` from the primary source; the real splits
    from the real source. Raises :class:`SourceError` if two splits would share a speaker.
    """
    pools = {cfg.source: speaker_splits(cfg, sources.member(cfg.source))}
    if cfg.real_source:
        pools[cfg.real_source] = real_speaker_splits(cfg, sources.member(cfg.real_source))
    plan: dict[str, dict[str, list[str]]] = {}
    for split in cfg.splits:
        names = cfg.training_sources if split in ("train", "val") else \
            (cfg.source,) if split == "test" else (cfg.real_source,)
        plan[split] = {n: namespaced(n, pools[n][split]) for n in names}
    seen: dict[str, str] = {}
    for split, groups in plan.items():
        for spk in (s for g in groups.values() for s in g):
            if spk in seen:
                raise SourceError(f"speaker {spk} is planned for splits {seen[spk]} and {split}")
            seen[spk] = split
    return plan


def speaker_splits(cfg: DataConfig, source: SpeechSource) -> dict[str, list[str]]:
    """Speakers per split: by LibriSpeech subset when ``cfg.subset_splits`` is set, else a seeded random cut."""
    if not cfg.subset_splits:
        return split_speakers(list(source.speakers()), cfg.split_fractions, cfg.seed)
    index = source.index()
    if "subset" not in index:
        raise SourceError(f"subset_splits needs a source with subsets (librispeech), not {source.name!r}")
    splits = {s: sorted(index.loc[index["subset"].isin(cfg.subset_splits[s]), "speaker"].unique()) for s in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            shared = set(splits[a]) & set(splits[b])
            if shared:
                raise SourceError(f"splits {a} and {b} share speakers {sorted(shared)[:5]}: check subset_splits")
    return splits


def required_speakers(cfg: DataConfig) -> int:
    """Distinct speakers each split needs to reach its largest class."""
    n_classes = len(class_names(cfg.class_set, cfg.max_count))
    return max(min(counts_of_class(c, cfg.class_set, cfg.max_count)) for c in range(n_classes))


class _SilentSpeaker(SourceError):
    """Every file of a speaker is silence to the VAD (a silent or broken recording)."""

    def __init__(self, speaker: str, utts: list[str]):
        super().__init__(f"speaker {speaker}: no speech found by the VAD in any of its {len(utts)} files")
        self.speaker, self.utts = speaker, utts


@dataclass
class _Sampler:
    """Draws utterances of a split's speakers and places them on the 10-ms frame grid."""

    source: SpeechSource
    utts: dict[str, list[str]]
    n_frames: int
    vad_mode: int

    def trimmed(self, rng: np.random.Generator, speaker: str) -> tuple[str, int, int]:
        """A random utterance of ``speaker`` with leading/trailing silence trimmed: (utt_id, first, end) frames."""
        pool = self.utts[speaker]
        for _ in range(20):
            utt = pool[int(rng.integers(len(pool)))]
            bounds = trim_bounds(self.source.vad(utt, self.vad_mode))
            if bounds is not None:
                return utt, bounds[0], bounds[1]
        if not any(trim_bounds(self.source.vad(u, self.vad_mode)) is not None for u in pool):
            raise _SilentSpeaker(speaker, pool)
        raise SourceError(f"speaker {speaker}: no speech found by the VAD in 20 draws of its utterances")

    def fill(self, rng: np.random.Generator, speaker: str) -> list[Segment]:
        """LibriCount placement: trimmed utterances back to back from a random point, covering the segment."""
        utt, a, b = self.trimmed(rng, speaker)
        pos = -int(rng.integers(0, b - a))
        segs = []
        while pos < self.n_frames:
            segs.append([utt, a, b - a, pos])
            pos += b - a
            utt, a, b = self.trimmed(rng, speaker)
        return self._clip(segs)

    def sparse(self, rng: np.random.Generator, speaker: str) -> list[Segment]:
        """Sparse placement: one or two 0.8-3 s stretches at a random offset, separated by a pause."""
        pos = int(rng.integers(0, self.n_frames - 50))
        segs = []
        for _ in range(int(rng.integers(1, 3))):
            utt, a, b = self.trimmed(rng, speaker)
            length = min(b - a, int(rng.integers(80, 300)))
            start = a + int(rng.integers(0, b - a - length + 1))
            segs.append([utt, start, length, pos])
            pos += length + int(rng.integers(20, 150))
            if pos >= self.n_frames:
                break
        return self._clip(segs)

    def _clip(self, segs: list[Segment]) -> list[Segment]:
        out = []
        for utt, src, n, dst in segs:
            if dst < 0:
                src, n, dst = src - dst, n + dst, 0
            n = min(n, self.n_frames - dst)
            if n > 0:
                out.append([utt, int(src), int(n), int(dst)])
        return out

    def activity(self, segs: list[Segment]) -> np.ndarray:
        """This speaker's activity in the mixture: the VAD of the placed stretches."""
        act = np.zeros(self.n_frames, bool)
        for utt, src, n, dst in segs:
            v = self.source.vad(utt, self.vad_mode)[src:src + n]
            act[dst:dst + len(v)] |= v
        return act


def _draw_row(cfg: DataConfig, sampler: _Sampler, speakers: list[str], target: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    counts = [c for c in counts_of_class(target, cfg.class_set, cfg.max_count) if c <= len(speakers)]
    nominal = int(rng.choice(counts))
    placement = "none" if nominal == 0 else ("sparse" if rng.random() < cfg.sparse_fraction else "fill")
    # Sparse placements lose speakers to pauses, so they may draw a few more than the target count.
    n_drawn = nominal if placement != "sparse" else min(nominal + int(rng.integers(0, 3)), cfg.max_count, len(speakers))
    chosen = [speakers[i] for i in sorted(rng.choice(len(speakers), size=n_drawn, replace=False))]
    place = sampler.fill if placement == "fill" else sampler.sparse
    tracks = [place(rng, s) for s in chosen]
    gains = [float(rng.uniform(*cfg.gain_db)) for _ in chosen]
    activity = np.stack([sampler.activity(t) for t in tracks]) if tracks else np.zeros((0, sampler.n_frames), bool)
    count = max_concurrent(activity)
    noise = {"seed": int(rng.integers(2**31)), "snr_db": None}
    if n_drawn and cfg.snr_db is not None:
        noise["snr_db"] = float(rng.uniform(*cfg.snr_db))
    rt60 = [float(rng.uniform(0.2, 0.8)) if rng.random() < cfg.reverb_prob else 0.0 for _ in chosen]
    recipe = {"n_samples": cfg.n_samples, "peak_dbfs": float(rng.uniform(*cfg.peak_dbfs)), "noise": noise,
              "tracks": [{"speaker": s, "gain_db": g, "rt60": r, "segments": t}
                         for s, g, r, t in zip(chosen, gains, rt60, tracks)]}
    return {"label": class_of(count, cfg.class_set, cfg.max_count), "count": count, "n_drawn": n_drawn,
            "placement": placement, "speakers": chosen, "utt_ids": sorted({seg[0] for t in tracks for seg in t}),
            "offsets": [int(t[0][3] * FRAME) if t else 0 for t in tracks], "gains_db": gains,
            "activity": json.dumps([to_runs(a) for a in activity]), "overlap": overlap_fraction(activity),
            "recipe": json.dumps(recipe, sort_keys=True), "seed": seed}


def make_split(cfg: DataConfig, source: SpeechSource, split: str, speakers: list[str],
               utts: dict[str, list[str]], quota: int | None = None, source_name: str | None = None) -> pd.DataFrame:
    """Recipes for one split (of one source), balanced on the label: aim each draw at the least-filled class, keep
    it if its label's class still has room (a sparse draw may land in a lower class than aimed at).

    ``quota`` is the mixtures per class (default: the split's); ``source_name`` goes into the ``source`` column
    and the seeds, so that a source's recipes do not depend on which other sources share the split.
    """
    n_classes = len(class_names(cfg.class_set, cfg.max_count))
    quota = cfg.quota(split) if quota is None else quota
    source_name = source_name or cfg.source
    stream = SOURCES.index(source_name) if source_name in SOURCES else len(SOURCES)
    sampler = _Sampler(source, utts, cfg.n_samples // FRAME, cfg.vad_mode)
    filled = np.zeros(n_classes, int)
    rows, attempt = [], 0
    speakers = list(speakers)
    max_attempts = 50 * quota * n_classes + 1000
    bar = progress(total=quota * n_classes, desc=f"recipes {split} ({source_name})")
    while filled.min() < quota:
        if attempt >= max_attempts:
            raise SourceError(f"split {split} ({source_name}): could not fill classes "
                              f"{np.flatnonzero(filled < quota).tolist()} after {attempt} draws; the source has "
                              f"too little speech for this configuration")
        open_classes = np.flatnonzero(filled == filled.min())
        seed = derived_seed(cfg.seed, ALL_SPLITS.index(split), stream, attempt)
        target = int(open_classes[np.random.default_rng(seed).integers(len(open_classes))])
        try:
            row = _draw_row(cfg, sampler, speakers, target, seed)
        except _SilentSpeaker as e:
            speakers.remove(_drop_silent(cfg, source, split, speakers, e))
            attempt += 1
            continue
        attempt += 1
        if row["label"] >= 0 and filled[row["label"]] < quota:
            filled[row["label"]] += 1
            rows.append(row)
            bar.update()
    bar.close()
    df = pd.DataFrame(rows)
    df.insert(0, "source", source_name)
    df.insert(0, "split", split)
    df.insert(0, "example_id", [f"{split}-{i:06d}" for i in range(len(df))])
    return df


def shares(quota: int, n: int) -> list[int]:
    """``quota`` cut into ``n`` near-equal whole shares (the first ones take the remainder)."""
    return [quota // n + (1 if i < quota % n else 0) for i in range(n)]


def _drop_silent(cfg: DataConfig, source: SpeechSource, split: str, speakers: list[str], e: _SilentSpeaker) -> str:
    """Skip (``on_error="skip"``, recorded in ``source.skipped``) or refuse a speaker whose files are all silent."""
    files = source.skip(e.utts, "no speech found by the VAD", record=cfg.on_error != "raise")
    if cfg.on_error == "raise":
        raise SourceError(f"{e}: {', '.join(files[:5])}") from None
    if len(speakers) - 1 < required_speakers(cfg):
        raise SourceError(f"split {split!r}: too few speakers with speech for K={cfg.max_count} once the silent "
                          f"speaker {e.speaker} is left out ({', '.join(files[:3])})") from None
    return e.speaker


def make_manifest(cfg: DataConfig, source: SpeechSource) -> pd.DataFrame:
    """All recipes of the data set (chapter 1); raises :class:`SourceError` if a split has too few speakers.

    ``source`` is the :class:`~data_prep.sources.SourceSet` of :func:`data_prep.sources.open_sources`, or the
    primary source alone (the real source is then opened from ``cfg``). Rows come split by split, and within a
    split source by source, each source filling an equal share of every class.
    """
    cfg.validate()
    sources = as_source_set(cfg, source)
    by_speaker = sources.speakers()
    plan = plan_splits(cfg, sources)
    need = required_speakers(cfg)
    for split, groups in plan.items():
        for name, spk in groups.items():
            if len(spk) < need:
                raise SourceError(
                    f"too few speakers for K={cfg.max_count}: split {split!r} gets {len(spk)} speakers of source "
                    f"{name!r}, but its largest class needs {need} distinct speakers; use a source with more "
                    f"speakers or a smaller max_count")
    frames = []
    for split, groups in plan.items():
        parts = [make_split(cfg, sources, split, spk, by_speaker, quota=q, source_name=name)
                 for (name, spk), q in zip(groups.items(), shares(cfg.quota(split), len(groups))) if q > 0]
        df = pd.concat(parts, ignore_index=True)
        df["example_id"] = [f"{split}-{i:06d}" for i in range(len(df))]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def manifest_hash(df: pd.DataFrame) -> str:
    """SHA-256 of the manifest's content (row order included), independent of the Parquet writer's version."""
    return hashlib.sha256(df.to_json(orient="records", double_precision=10).encode()).hexdigest()
