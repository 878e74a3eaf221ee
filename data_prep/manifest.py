"""The data set as a manifest of mixing recipes (chapter 1): speaker-disjoint splits, balanced labels, a hash.

A row holds everything needed to render its audio deterministically (:func:`data_prep.render.render_mixture`):
which utterances of which speakers go where (in 10-ms frames), the per-speaker gains, the background and its SNR,
the output peak level. The label k is computed here, from the VAD tracks of the placed utterances, before any
audio is mixed: k = max over frames of the number of active speakers (:func:`data_prep.labels.max_concurrent`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ersam_lib.progress import progress

from .config import SPLITS, DataConfig
from .labels import class_names, class_of, counts_of_class, max_concurrent, overlap_fraction
from .sources.base import SourceError, SpeechSource
from .vad import FRAME, to_runs, trim_bounds

Segment = list  # [utt_id, src_frame, n_frames, dst_frame]


def split_speakers(speakers: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, list[str]]:
    """Shuffle speakers with ``seed`` and cut them into train/val/test: no speaker is in two splits."""
    order = sorted(speakers)
    perm = np.random.default_rng([seed, 0]).permutation(len(order))
    shuffled = [order[i] for i in perm]
    n_train = int(round(fractions[0] * len(order)))
    n_val = int(round(fractions[1] * len(order)))
    parts = {"train": shuffled[:n_train], "val": shuffled[n_train:n_train + n_val], "test": shuffled[n_train + n_val:]}
    return {k: sorted(v) for k, v in parts.items()}


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
               utts: dict[str, list[str]]) -> pd.DataFrame:
    """Recipes for one split, balanced on the label: aim each draw at the least-filled class, keep it if its
    label's class still has room (a sparse draw may land in a lower class than aimed at)."""
    n_classes = len(class_names(cfg.class_set, cfg.max_count))
    quota = cfg.per_class[split]
    sampler = _Sampler(source, utts, cfg.n_samples // FRAME, cfg.vad_mode)
    filled = np.zeros(n_classes, int)
    rows, attempt = [], 0
    speakers = list(speakers)
    max_attempts = 50 * quota * n_classes + 1000
    bar = progress(total=quota * n_classes, desc=f"recipes {split}")
    while filled.min() < quota:
        if attempt >= max_attempts:
            raise SourceError(f"split {split}: could not fill classes {np.flatnonzero(filled < quota).tolist()} "
                              f"after {attempt} draws; the source has too little speech for this configuration")
        open_classes = np.flatnonzero(filled == filled.min())
        seed = int(np.random.SeedSequence([cfg.seed, SPLITS.index(split), attempt]).generate_state(1)[0])
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
    df.insert(0, "split", split)
    df.insert(0, "example_id", [f"{split}-{i:06d}" for i in range(len(df))])
    return df


def _drop_silent(cfg: DataConfig, source: SpeechSource, split: str, speakers: list[str], e: _SilentSpeaker) -> str:
    """Skip (``on_error="skip"``, recorded in ``source.skipped``) or refuse a speaker whose files are all silent."""
    index = source.index()
    where = dict(zip(index["utt_id"], index["path"])) if "path" in index else {}
    files = [str(where.get(u, u)) for u in e.utts]
    if cfg.on_error == "raise":
        raise SourceError(f"{e}: {', '.join(files[:5])}") from None
    source.skipped.extend({"path": f, "error": "no speech found by the VAD"} for f in files)
    if len(speakers) - 1 < required_speakers(cfg):
        raise SourceError(f"split {split!r}: too few speakers with speech for K={cfg.max_count} once the silent "
                          f"speaker {e.speaker} is left out ({', '.join(files[:3])})") from None
    return e.speaker


def make_manifest(cfg: DataConfig, source: SpeechSource) -> pd.DataFrame:
    """All recipes of the data set (chapter 1); raises :class:`SourceError` if a split has too few speakers."""
    cfg.validate()
    by_speaker = source.speakers()
    splits = speaker_splits(cfg, source)
    need = required_speakers(cfg)
    for split, spk in splits.items():
        if len(spk) < need:
            raise SourceError(
                f"too few speakers for K={cfg.max_count}: split {split!r} gets {len(spk)} of the source's "
                f"{len(by_speaker)} speakers, but its largest class needs {need} distinct speakers; use a source "
                f"with more speakers or a smaller max_count")
    frames = [make_split(cfg, source, s, splits[s], by_speaker) for s in SPLITS]
    return pd.concat(frames, ignore_index=True)


def manifest_hash(df: pd.DataFrame) -> str:
    """SHA-256 of the manifest's content (row order included), independent of the Parquet writer's version."""
    return hashlib.sha256(df.to_json(orient="records", double_precision=10).encode()).hexdigest()
