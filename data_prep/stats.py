"""Checks and statistics of a built data set that chapter 1 shows: balance, overlap per k, label agreement,
speaker disjointness, and one row per split (synthetic next to real)."""

from __future__ import annotations

import pandas as pd

from .config import ALL_SPLITS


def splits_of(manifest: pd.DataFrame) -> list[str]:
    """The splits a manifest holds, in the book's order (train, val, test, then the real ones)."""
    present = set(manifest["split"])
    return [s for s in ALL_SPLITS if s in present]


def _speakers(manifest: pd.DataFrame, split: str) -> set[str]:
    return set().union(set(), *manifest.loc[manifest["split"] == split, "speakers"].map(set))


def class_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Mixtures per (class index, split): the balance table."""
    return pd.crosstab(manifest["label"], manifest["split"]).reindex(columns=splits_of(manifest), fill_value=0)


def overlap_by_count(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per max-concurrency k: mixtures, mean share of speech frames with >= 2 speakers (LibriCount: ~85 % at k=2)."""
    g = manifest.groupby("count")["overlap"]
    return pd.DataFrame({"mixtures": g.size(), "overlap_mean": g.mean(), "overlap_median": g.median()})


def label_agreement(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per placement: share of mixtures whose VAD label k equals the number of speakers drawn, and mean gap."""
    speech = manifest[manifest["n_drawn"] > 0]
    g = speech.groupby("placement")
    return pd.DataFrame({"mixtures": g.size(), "k_equals_drawn": g.apply(lambda d: (d["count"] == d["n_drawn"]).mean()),
                         "mean_drawn_minus_k": g.apply(lambda d: (d["n_drawn"] - d["count"]).mean())})


def speaker_overlap(manifest: pd.DataFrame) -> dict[str, int]:
    """Speakers shared by each pair of splits (all zero for a speaker-disjoint data set)."""
    names = splits_of(manifest)
    spk = {s: _speakers(manifest, s) for s in names}
    return {f"{a}&{b}": len(spk[a] & spk[b]) for i, a in enumerate(names) for b in names[i + 1:]}


def speakers_used(manifest: pd.DataFrame) -> dict[str, int]:
    """Distinct speakers that appear in each split's mixtures."""
    return {s: len(_speakers(manifest, s)) for s in splits_of(manifest)}


def split_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per split (chapter 1's synthetic-next-to-real table): its sources, mixtures, speakers, utterances,
    classes, mixtures per class, mean overlap share at k = 2 (where real and synthetic speech differ most), and
    the share of sparse placements."""
    rows = {}
    for split in splits_of(manifest):
        m = manifest[manifest["split"] == split]
        source = m["source"] if "source" in m else pd.Series(["?"] * len(m))
        two = m[m["count"] == 2]
        rows[split] = {"sources": "+".join(dict.fromkeys(source)), "mixtures": len(m),
                       "speakers": len(_speakers(manifest, split)),
                       "utterances": len(set().union(set(), *m["utt_ids"].map(set))),
                       "classes": int(m["label"].nunique()), "per_class": int(m["label"].value_counts().min()),
                       "overlap_k2": float(two["overlap"].mean()) if len(two) else float("nan"),
                       "sparse_share": float((m["placement"] == "sparse").mean())}
    return pd.DataFrame.from_dict(rows, orient="index")


def summary_metrics(manifest: pd.DataFrame, info: dict, report, floor: dict[str, float]) -> dict:
    """The figures chapter 1 records for the run summary (measured from the built data, never typed in)."""
    counts = class_counts(manifest)
    overlap = overlap_by_count(manifest)
    agree = label_agreement(manifest)
    used = speakers_used(manifest)
    names = splits_of(manifest)
    out = {f"n_{s}": int((manifest["split"] == s).sum()) for s in names}
    out |= {f"speakers_{s}": used[s] for s in names}
    out |= {"splits": names, "n_classes": len(info["classes"]), "K": int(info["K"]), "class_set": info["class_set"],
            "class_imbalance": int((counts.max() - counts.min()).max()),
            "speaker_overlap_total": int(sum(speaker_overlap(manifest).values())),
            "overlap_k2": float(overlap.loc[2, "overlap_mean"]) if 2 in overlap.index else None,
            "manifest_sha256": info["manifest_sha256"], "source": info["source"]["name"],
            "train_sources": list(info.get("train_sources", [info["source"]["name"]])),
            "real_source": info.get("real_source"),
            "build_total_s": float(report.total_s),
            "mixtures_per_s": float(report.mixtures_per_s) if report.render_s > 0 else None}
    for place in ("fill", "sparse"):
        out[f"agreement_{place}"] = float(agree.loc[place, "k_equals_drawn"]) if place in agree.index else None
    out |= {f"floor_{k}": float(v) for k, v in floor.items()}
    return out
