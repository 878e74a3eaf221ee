"""Chapter 4's experiment: no teacher vs full distillation vs selective distillation at several thresholds.

Each variant trains a fresh supernet with the same data, seed and schedule (:func:`train_variant`), then scores
its smallest, a middle and its largest subnet on the validation split after BN recalibration. :func:`run_ablation`
writes ``RUN_DIR/supernet/ablation.csv``/``.json`` and saves the ``final`` variant as ``RUN_DIR/supernet/supernet.pt``
for chapter 5 (:func:`ersam_lib.models.supernet.load_supernet`). Finished variants are not retrained: their checkpoints
are reused, so a re-run (or a resumed run after a kill) costs only what is missing. ``ersam train`` (see
:mod:`ersam_lib.app.cli`) trains one variant from the command line, under ``torchrun`` too.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, RandomSampler

from ..core.io import ArtifactError, atomic_path, atomic_write_json, read_json, sha256_file, torch_load
from ..core.progress import progress
from ..core.rundir import CHECKPOINT, damaged, run_file, variant_dir
from ..core.scales import sizes
from ..measure.data import FeatureData, load_feature_data, paired_with_waveforms
from ..measure.evaluation import eval_loader, labels_of, predict
from ..measure.uncertainty import accuracy_interval, mcnemar
from ..models.space import SearchSpace, space_for_run
from ..models.supernet import Supernet, calibrated_subnet, save_supernet
from ..models.teacher import load_teacher, teacher_info
from ..training.distill import DistillConfig, uncertainty
from ..training.train import TrainConfig, dist_info, train_supernet

__all__ = [
    "CLAIM_READINGS", "SUBNETS", "AblationConfig", "claim_check", "claim_tests", "full_from_offline", "gate_curve",
    "middle_arch", "paired_subnets", "run_ablation", "score_subnets", "subnet_archs", "subnet_predictions",
    "train_variant", "uncertainty_profile", "variant_name",
]


@dataclass(frozen=True)
class AblationConfig:
    """The variants chapter 4 compares, how chapter 5's supernet is picked, and how subnets are scored.

    ``final`` names the variant saved for chapter 5; ``None`` picks, among the selective variants, the one with the
    highest measured query rate that stays within ``max_query_rate`` (the one closest to full distillation within
    the teacher budget), or the least-querying one if none does.

    ``derive_full``: when the variants hold full and offline distillation with the same settings, train offline only
    and derive full's row from it (:func:`full_from_offline`). On chapter 1's fixed training set the frozen teacher
    gives the same targets every epoch, so the two train the same supernet (``tests/test_ablation.py`` trains both
    and compares the weights); only the teacher's cost differs, and that is counted. ``False`` trains both.
    """

    variants: tuple[DistillConfig, ...]
    final: DistillConfig | None = None
    max_query_rate: float = 0.3
    n_bn_batches: int = 16
    bn_batch_size: int = 64
    derive_full: bool = True

    @classmethod
    def for_scale(cls, scale: str, kind: str = "entropy", taus: tuple[float, ...] | None = None,
                  gate_on: str = "student", derive_full: bool = True) -> AblationConfig:
        """``smoke``: none, full, offline, one τ; ``tutorial``/``paper``: none, full, offline and three τ.

        With the gate on every subnet of the sandwich, entropy τ ≤ 0.8 still sends over 30 % of the training
        samples to the teacher at tutorial scale (measured: 84 % at 0.5, 61 % at 0.7, 37 % at 0.8), hence the grid.
        """
        table = sizes("ablation", scale)
        sel = tuple(DistillConfig(mode="selective", tau=t, kind=kind, gate_on=gate_on)  # type: ignore[arg-type]
                    for t in taus or table["taus"])
        base = (DistillConfig(mode="none"), DistillConfig(mode="full"), DistillConfig(mode="offline"))
        return cls(variants=base + sel, n_bn_batches=table["n_bn_batches"], derive_full=derive_full)

    def pick_final(self, df: pd.DataFrame) -> DistillConfig:
        """The variant chapter 5 gets, by the rule above, from the measured ablation table."""
        if self.final is not None:
            return self.final
        sel = [d for d in self.variants if d.mode == "selective"]
        if not sel:
            raise ValueError("the ablation has no selective variant to hand to chapter 5")
        rate = df.set_index("variant")["query_rate"]
        within = [d for d in sel if rate[variant_name(d)] <= self.max_query_rate]
        if within:
            return max(within, key=lambda d: rate[variant_name(d)])
        return min(sel, key=lambda d: rate[variant_name(d)])


def variant_name(d: DistillConfig) -> str:
    """Folder-safe name of a variant: ``none``, ``full``, ``selective-entropy-tau0.5``."""
    if d.mode != "selective":
        return d.mode
    return f"selective-{d.kind}-tau{d.tau:g}" + ("-largest" if d.gate_on == "largest" else "")


def middle_arch(space: Any, n: int = 101, seed: int = 12345) -> Any:
    """The median-MACs architecture of ``n`` random draws: the "middle" subnet of the ablation (chapter 4)."""
    rng = random.Random(seed)
    archs = sorted({space.sample(rng) for _ in range(n)}, key=lambda a: (space.macs(a), a.arch_id))
    return archs[len(archs) // 2]


def _build(run_dir: str | os.PathLike, scale: str, data: FeatureData, seed: int) -> tuple[Supernet, SearchSpace]:
    space = space_for_run(run_dir, scale, data)
    torch.manual_seed(seed)
    return Supernet(space), space


def _load_variant(run_dir: str | os.PathLike, scale: str, data: FeatureData, seed: int,
                  name: str) -> tuple[Supernet, SearchSpace]:
    """A fresh supernet with the weights of variant ``name``'s last checkpoint."""
    supernet, space = _build(run_dir, scale, data, seed)
    path = variant_dir(run_dir, name) / CHECKPOINT
    try:
        supernet.load_state_dict(torch_load(path)["model"])
    except (ArtifactError, FileNotFoundError) as e:
        raise damaged(path, run_dir, "supernet", str(e)) from None
    return supernet, space


def _provenance(run_dir: str | os.PathLike, data: FeatureData, d: DistillConfig) -> dict[str, Any]:
    """What a variant is trained from: the features' content key and, when it distils, the teacher's weights."""
    return {"data": data.key, "teacher": teacher_info(run_dir)["weights_sha256"] if d.uses_teacher else None}


def _teacher_for(run_dir: str | os.PathLike, d: DistillConfig) -> torch.nn.Module | None:
    return load_teacher(run_dir) if d.uses_teacher else None


def _teacher_reads_waveforms(run_dir: str | os.PathLike) -> bool:
    return teacher_info(run_dir).get("input", "logmel") == "waveform"


def _distill_data(run_dir: str | os.PathLike, data: FeatureData, split: str, d: DistillConfig) -> Any:
    """``split`` as the trainer's items: ``(x, y)``, or ``(x, y, waveform)`` when a waveform teacher takes part."""
    if d.uses_teacher and _teacher_reads_waveforms(run_dir):
        return paired_with_waveforms(run_dir, data, split)
    return data.splits[split]


SUBNETS = ("smallest", "middle", "largest")


def subnet_archs(space: Any) -> dict[str, Any]:
    """The three subnets chapter 4 scores, by name (:data:`SUBNETS`)."""
    return dict(zip(SUBNETS, (space.smallest(), middle_arch(space), space.largest())))


def subnet_predictions(supernet: Any, space: Any, data: FeatureData, n_bn_batches: int, bn_batch_size: int,
                       seed: int, split: str = "val") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{subnet: (labels, predictions)}`` of the smallest, middle and largest subnets on one split, each after BN
    recalibration on training batches (chapter 4: the scores and the paired tests between variants come from these)."""
    out = {}
    for label, arch in subnet_archs(space).items():
        bn = DataLoader(data.train, batch_size=bn_batch_size,
                        sampler=RandomSampler(data.train, generator=torch.Generator().manual_seed(seed)))
        out[label] = predict(calibrated_subnet(supernet, arch, bn, n_bn_batches), eval_loader(data.splits[split]))
    return out


def score_subnets(supernet: Any, space: Any, data: FeatureData, n_bn_batches: int, bn_batch_size: int,
                  seed: int, split: str = "val",
                  predictions: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> dict[str, float]:
    """Accuracy (with its exact 95 % interval) and MAE of the smallest, middle and largest subnets after BN
    recalibration on one split (chapter 4), from ``predictions`` (:func:`subnet_predictions`) when given.

    Keys ``acc_<subnet>`` (``_low``, ``_high``), ``mae_<subnet>``, ``macs_<subnet>`` on ``val`` (the ablation table);
    on another split (``test``, ``real_test``: chapter 4's final supernet) ``<split>_acc_<subnet>`` (``_low``,
    ``_high``) and ``<split>_mae_<subnet>``.
    """
    prefix = "" if split == "val" else f"{split}_"
    preds = predictions or subnet_predictions(supernet, space, data, n_bn_batches, bn_batch_size, seed, split)
    out: dict[str, float] = {}
    for label, (y, p) in preds.items():
        acc = accuracy_interval(p == y)
        out |= {f"{prefix}acc_{label}": acc.value, f"{prefix}acc_{label}_low": acc.low,
                f"{prefix}acc_{label}_high": acc.high, f"{prefix}mae_{label}": float(np.mean(np.abs(p - y)))}
    if not prefix:
        out |= {f"macs_{label}": space.macs(arch) for label, arch in subnet_archs(space).items()}
    return out


def paired_subnets(run_dir: str | os.PathLike, a: str = "full", b: str = "none") -> pd.DataFrame:
    """Variant ``a`` against ``b`` per subnet, on the same validation windows (chapter 4): both accuracies, the
    difference a - b in points with its 95 % interval, McNemar's exact p-value and the verdict it gives ("<a> better",
    "<b> better" or "not distinguishable at this scale"). Reads the predictions :func:`run_ablation` recorded."""
    saved = read_json(run_file(run_dir, "ablation_json"))
    preds = {r["variant"]: r.get("val_predictions") for r in saved["rows"]}
    for name in (a, b):
        if not preds.get(name):
            raise ValueError(f"the ablation holds no validation predictions of variant {name!r} (it has "
                             f"{', '.join(k for k, v in preds.items() if v) or 'none'}); run chapter 4 again")
    y = np.asarray(saved["val_labels"])
    rows = []
    for subnet in SUBNETS:
        pa, pb = np.asarray(preds[a][subnet]), np.asarray(preds[b][subnet])
        t = mcnemar(pa == y, pb == y)
        rows.append({"subnet": subnet, f"acc_{a}": float(np.mean(pa == y)), f"acc_{b}": float(np.mean(pb == y)),
                     **t.points("diff_points"), "p": t.p_value, "n": t.n, "verdict": t.verdict(a, b)})
    return pd.DataFrame(rows)


CLAIM_READINGS = ("within tol", "more than tol worse", "not distinguishable at this scale")


def claim_tests(run_dir: str | os.PathLike, df: pd.DataFrame, max_query_rate: float = 0.3,
                tol: float = 0.01) -> pd.DataFrame:
    """ERSAM's claim decided by paired tests instead of differences (chapter 4): for each selective (and offline)
    variant and subnet, the accuracy difference to *full* on the same validation windows with its 95 % interval, read
    as *within tol* where the whole interval lies above ``-tol`` (shown not to be worse by more than ``tol``), *more
    than tol worse* where it lies below, else not distinguishable. ``claim`` per variant: "holds" where it queries at
    most ``max_query_rate`` and every subnet is within tol, "fails" where it queries more or a subnet is shown worse,
    else "not distinguishable at this scale"."""
    rows = []
    for name, rate in df[df["mode"].isin(("selective", "offline"))].set_index("variant")["query_rate"].items():
        tests = paired_subnets(run_dir, a=name, b="full").set_index("subnet")
        readings = {s: CLAIM_READINGS[0] if t["diff_points_low"] > -100 * tol
                    else CLAIM_READINGS[1] if t["diff_points_high"] < -100 * tol else CLAIM_READINGS[2]
                    for s, t in tests.iterrows()}
        claim = ("fails" if rate > max_query_rate or CLAIM_READINGS[1] in readings.values()
                 else "holds" if set(readings.values()) == {CLAIM_READINGS[0]} else CLAIM_READINGS[2])
        rows.append({"variant": name, "query_rate": rate}
                    | {f"{s}_minus_full": tests.loc[s, "diff_points"] for s in SUBNETS}
                    | {f"{s}_low": tests.loc[s, "diff_points_low"] for s in SUBNETS}
                    | {f"{s}_reading": readings[s] for s in SUBNETS} | {"claim": claim})
    return pd.DataFrame(rows)


def train_variant(run_dir: str | os.PathLike, scale: str, cfg: TrainConfig, name: str | None = None,
                  data: FeatureData | None = None, n_bn_batches: int = 16, bn_batch_size: int = 64,
                  device: str | None = "auto") -> dict[str, Any]:
    """Train one supernet variant into ``RUN_DIR/supernet/runs/<name>`` and score it (chapter 4; also the CLI).

    Returns one row of the ablation table. Under ``torchrun`` every rank trains; rank 0 scores. Training and
    scoring run on ``device`` (the GPU when there is one, see :func:`~ersam_lib.core.repro.pick_device`).
    """
    data = data or load_feature_data(run_dir)
    name = name or variant_name(cfg.distill)
    supernet, space = _build(run_dir, scale, data, cfg.seed)
    ckpt_dir = variant_dir(run_dir, name)
    res = train_supernet(supernet, space, _distill_data(run_dir, data, "train", cfg.distill), cfg, ckpt_dir,
                         teacher=_teacher_for(run_dir, cfg.distill),
                         device=device, provenance=_provenance(run_dir, data, cfg.distill))
    row: dict[str, Any] = {"variant": name, "label": cfg.distill.label(), "mode": cfg.distill.mode,
                           "tau": cfg.distill.tau if cfg.distill.mode == "selective" else None,
                           "uncertainty": cfg.distill.kind, "epochs": cfg.epochs, "wall_s": res.wall_s,
                           "resumed_from_epoch": res.resumed_from,
                           "final_loss_largest": res.history[-1]["loss_largest"]}
    row |= {k: res.teacher[k] for k in ("samples_seen", "teacher_samples", "teacher_forward_passes", "query_rate",
                                        "teacher_compute_saved")}
    row |= {"teacher_gflops": res.teacher.get("teacher_gflops", 0.0), "wall_source": "measured",
            "teacher_cache_s": res.teacher.get("teacher_cache_s"), "cache_lookups": res.teacher.get("cache_lookups")}
    if dist_info()[0] == 0:
        preds = subnet_predictions(supernet, space, data, n_bn_batches, bn_batch_size, cfg.seed)
        row |= score_subnets(supernet, space, data, n_bn_batches, bn_batch_size, cfg.seed, predictions=preds)
        row["val_predictions"] = {label: p.tolist() for label, (_, p) in preds.items()}
    row["checkpoint"] = str(ckpt_dir / CHECKPOINT)
    return row


def run_ablation(run_dir: str | os.PathLike, scale: str, seed: int = 0, acfg: AblationConfig | None = None,
                 train_cfg: TrainConfig | None = None, device: str | None = "auto") -> pd.DataFrame:
    """Train and score every variant, write ``ablation.csv``/``ablation.json``, save the final supernet (chapter 4)."""
    acfg = acfg or AblationConfig.for_scale(scale)
    base = train_cfg or TrainConfig.for_scale(scale, seed=seed)
    data = load_feature_data(run_dir)
    derived = _derived_full(acfg)
    rows = []
    for d in progress([d for d in acfg.variants if d is not derived], desc="ablation variants"):
        rows.append(train_variant(run_dir, scale, replace(base, distill=d), data=data,
                                  n_bn_batches=acfg.n_bn_batches, bn_batch_size=acfg.bn_batch_size, device=device))
    if derived is not None:  # in the table's order: full's row where full stands among the variants
        offline = next(r for r in rows if r["variant"] == "offline")
        rows.insert(acfg.variants.index(derived), full_from_offline(offline, derived))
    df = pd.DataFrame([{k: v for k, v in r.items() if k != "val_predictions"} for r in rows])
    with atomic_path(run_file(run_dir, "ablation_csv")) as tmp:
        df.to_csv(tmp, index=False)
    atomic_write_json(run_file(run_dir, "ablation_json"), {"train_config": base.to_dict(), "rows": rows,
                                                           "val_labels": labels_of(data.val).tolist()})
    _save_final(run_dir, scale, data, base, acfg.pick_final(df), df)
    return df


def _derived_full(acfg: AblationConfig) -> DistillConfig | None:
    """The full-distillation variant that :func:`full_from_offline` stands in for, or ``None`` (train it)."""
    if not acfg.derive_full:
        return None
    for d in acfg.variants:
        if d.mode == "full" and replace(d, mode="offline") in acfg.variants:
            return d
    return None


def full_from_offline(offline: dict[str, Any], full: DistillConfig) -> dict[str, Any]:
    """Full distillation's ablation row, derived from offline distillation's on a fixed training set (chapter 4).

    The supernet, hence every accuracy, is offline's: the frozen teacher's outputs on an unchanged sample are the
    same every epoch, and offline distillation feeds exactly those. The teacher's cost is counted as full
    distillation pays it, one pass per sample seen (``cache_lookups`` batches), and the wall time is offline's with
    its one pass over the training set scaled up to those samples at the pass's measured time per sample.
    ``wall_source`` says so.
    """
    seen, cached = offline["samples_seen"], max(1, offline["teacher_samples"])
    cache_s = offline.get("teacher_cache_s") or 0.0
    row = dict(offline) | {"variant": variant_name(full), "label": full.label(), "mode": full.mode, "tau": None,
                           "teacher_samples": seen, "teacher_forward_passes": offline["cache_lookups"],
                           "query_rate": 1.0 if seen else 0.0, "teacher_compute_saved": 0.0,
                           "teacher_gflops": offline["teacher_gflops"] * seen / cached,
                           "wall_s": offline["wall_s"] - cache_s + cache_s * seen / cached,
                           "wall_source": "derived from offline", "teacher_cache_s": None, "cache_lookups": None}
    return row


def claim_check(df: pd.DataFrame, max_query_rate: float = 0.3, tol: float = 0.01) -> pd.DataFrame:
    """ERSAM's claim, checked per selective variant of an ablation table, offline distillation beside them (chapter 4).

    The claim: the selective scheme queries the teacher on at most ``max_query_rate`` of the samples while each
    subnet's accuracy stays within ``tol`` of full distillation. Returns one row per selective (and offline) variant
    with its query rate (teacher passes per training sample seen, the same count for every variant), the accuracy
    gap to *full* per subnet size (negative = worse) and whether the claim's two conditions hold for it.
    """
    by = df.set_index("variant")
    if "full" not in by.index:
        raise ValueError("the ablation table has no 'full' variant to compare with")
    rows = []
    for name, r in by[by["mode"].isin(("selective", "offline"))].iterrows():
        gaps = {f"gap_{s}": r[f"acc_{s}"] - by.loc["full", f"acc_{s}"] for s in ("smallest", "middle", "largest")}
        rows.append({"variant": name, "label": r["label"], "query_rate": r["query_rate"]} | gaps
                    | {"claim_holds": bool(r["query_rate"] <= max_query_rate and min(gaps.values()) >= -tol)})
    return pd.DataFrame(rows)


def _save_final(run_dir: str | os.PathLike, scale: str, data: FeatureData, base: TrainConfig, final: DistillConfig,
                df: pd.DataFrame) -> Path:
    name = variant_name(final)
    row = df[df["variant"] == name].iloc[0].to_dict()
    trained = "offline" if row.get("wall_source") == "derived from offline" else name  # derived: offline's weights
    supernet, space = _load_variant(run_dir, scale, data, base.seed, trained)
    info = {"variant": name, "distill": final.to_dict(), "train_config": replace(base, distill=final).to_dict(),
            "scores": {k: v for k, v in row.items() if k.startswith(("acc_", "mae_"))},
            "provenance": _provenance(run_dir, data, final)
            | {"checkpoint_sha256": sha256_file(variant_dir(run_dir, trained) / CHECKPOINT)}}
    return save_supernet(run_file(run_dir, "supernet"), supernet, space, info)


@torch.no_grad()
def uncertainty_profile(run_dir: str | os.PathLike, scale: str, variant: str = "none", subnet: str = "smallest",
                        n_bn_batches: int = 16, seed: int = 0) -> pd.DataFrame:
    """Per validation sample: a trained subnet's entropy and margin uncertainty, whether it and the teacher are right.

    Chapter 4 uses it to check ERSAM's observation before relying on it: is the student wrong where it is uncertain,
    and is the teacher right there?
    """
    data = load_feature_data(run_dir)
    supernet, space = _load_variant(run_dir, scale, data, seed, variant)
    arch = subnet_archs(space)[subnet]
    bn = DataLoader(data.train, batch_size=64,
                    sampler=RandomSampler(data.train, generator=torch.Generator().manual_seed(seed)))
    model = calibrated_subnet(supernet, arch, bn, n_bn_batches).eval()
    teacher = load_teacher(run_dir)
    val = paired_with_waveforms(run_dir, data, "val") if _teacher_reads_waveforms(run_dir) else data.val
    parts = []
    for batch in eval_loader(val):
        x, y = batch[0], batch[1]
        s, t = model(x), teacher(batch[2] if len(batch) > 2 else x)
        parts.append(pd.DataFrame({"entropy": uncertainty(s, "entropy").numpy(),
                                   "margin": uncertainty(s, "margin").numpy(),
                                   "student_correct": (s.argmax(1) == y).numpy(),
                                   "teacher_correct": (t.argmax(1) == y).numpy(), "label": y.numpy()}))
    return pd.concat(parts, ignore_index=True)


def gate_curve(profile: pd.DataFrame, kind: str = "entropy", taus: np.ndarray | None = None) -> pd.DataFrame:
    """For each τ: share of samples queried, and of the student's errors that fall among the queried (chapter 4)."""
    taus = np.linspace(0, 1, 21) if taus is None else taus
    wrong = ~profile["student_correct"].to_numpy()
    u = profile[kind].to_numpy()
    rows = []
    for tau in taus:
        q = u > tau
        rows.append({"tau": float(tau), "query_rate": float(q.mean()),
                     "errors_covered": float((q & wrong).sum() / max(1, wrong.sum())),
                     "teacher_fixes": float((q & wrong & profile["teacher_correct"].to_numpy()).sum()
                                            / max(1, wrong.sum()))})
    return pd.DataFrame(rows)
