"""Chapter 4's ablation and chapter 3's one-call teacher on a real (tiny) data set built by data_prep."""

import os
import subprocess
import sys
from dataclasses import replace

import pandas as pd
import pytest
import torch

from ersam_lib.experiments.ablation import (SUBNETS, AblationConfig, claim_check, claim_tests, gate_curve, middle_arch,
                                            paired_subnets, run_ablation, uncertainty_profile, variant_name)
from ersam_lib.measure.uncertainty import UNDECIDED
from ersam_lib.models.space import SearchSpace
from ersam_lib.models.supernet import load_supernet
from ersam_lib.models.teacher import TeacherConfig, teacher_info
from ersam_lib.training.distill import DistillConfig
from ersam_lib.training.fit import fit_teacher
from ersam_lib.training.train import TrainConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from data_prep.build import build_tiny

    run_dir = tmp_path_factory.mktemp("tiny_run")
    build_tiny(run_dir, seed=0)
    fit_teacher(run_dir, TeacherConfig(epochs=2, batch_size=8, channels=(4, 8, 8), hidden=8))
    return run_dir


def test_fit_teacher_writes_its_report(tiny_run):
    info = teacher_info(tiny_run)
    assert info["kind"] == "crnn" and info["input"] == "logmel" and info["fallback_reason"] is None
    assert 0 <= info["val_acc"] <= 1 and 0 <= info["test_acc"] <= 1 and info["params"] > 0
    assert len(info["history"]) == 2 and info["train_samples"] > 0


def test_fit_teacher_reuses_a_saved_teacher_only_when_recipe_data_and_weights_match(tiny_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    recipe = TeacherConfig(epochs=2, batch_size=8, channels=(4, 8, 8), hidden=8)
    weights = run_dir / "teacher" / "teacher.pt"
    before = (teacher_info(run_dir), weights.stat().st_mtime_ns)
    assert fit_teacher(run_dir, recipe) == before[0] and weights.stat().st_mtime_ns == before[1]  # not trained again
    weights.write_bytes(weights.read_bytes()[:-10])  # damaged: trained again, and the new weights load
    again = fit_teacher(run_dir, recipe)
    assert again["weights_sha256"] != before[0]["weights_sha256"] or weights.stat().st_mtime_ns != before[1]
    other = fit_teacher(run_dir, TeacherConfig(epochs=1, batch_size=8, channels=(4, 8, 8), hidden=8))
    assert len(other["history"]) == 1 and other["config"]["epochs"] == 1  # another recipe: trained again


def test_ablation_table_final_supernet_and_gate_curve(tiny_run):
    acfg = AblationConfig(variants=(DistillConfig(mode="none"), DistillConfig(mode="full"),
                                    DistillConfig(mode="selective", tau=0.5)),
                          final=DistillConfig(mode="selective", tau=0.5), n_bn_batches=2, bn_batch_size=8)
    cfg = TrainConfig(epochs=1, batch_size=8, n_random=1)
    df = run_ablation(tiny_run, "smoke", acfg=acfg, train_cfg=cfg)
    assert list(df["variant"]) == ["none", "full", "selective-entropy-tau0.5"]
    by = df.set_index("variant")
    assert by.loc["none", "teacher_samples"] == 0 and by.loc["full", "query_rate"] == 1.0
    assert 0 <= by.loc["selective-entropy-tau0.5", "query_rate"] <= 1
    assert (df["samples_seen"] == by.loc["none", "samples_seen"]).all()
    for col in ("acc_smallest", "acc_middle", "acc_largest"):
        assert df[col].between(0, 1).all()
    assert (df["macs_smallest"] < df["macs_middle"]).all() and (df["macs_middle"] < df["macs_largest"]).all()
    assert pd.read_csv(tiny_run / "supernet" / "ablation.csv").shape[0] == 3
    assert (df["wall_source"] == "measured").all()  # no offline twin: full is trained
    net, space, info = load_supernet(tiny_run)
    assert info["variant"] == "selective-entropy-tau0.5" and space.contains(space.largest())
    # a second run reuses the finished checkpoints instead of retraining
    again = run_ablation(tiny_run, "smoke", acfg=acfg, train_cfg=cfg)
    assert (again["resumed_from_epoch"] == 1).all()
    assert again["acc_largest"].tolist() == df["acc_largest"].tolist()
    check = claim_check(df, max_query_rate=1.0, tol=1.0)
    assert list(check["variant"]) == ["selective-entropy-tau0.5"] and check["claim_holds"].all()
    assert check["gap_largest"].iloc[0] == pytest.approx(by.loc["selective-entropy-tau0.5", "acc_largest"]
                                                         - by.loc["full", "acc_largest"])
    assert not claim_check(df, max_query_rate=-0.1)["claim_holds"].any()
    # the paired tests read the validation predictions recorded beside the table: the same accuracies, window by window
    paired = paired_subnets(tiny_run, "full", "none").set_index("subnet")
    for size in SUBNETS:
        assert paired.loc[size, "acc_full"] == pytest.approx(by.loc["full", f"acc_{size}"])
        assert paired.loc[size, "acc_none"] == pytest.approx(by.loc["none", f"acc_{size}"])
        assert paired.loc[size, "diff_points"] == pytest.approx(
            100 * (by.loc["full", f"acc_{size}"] - by.loc["none", f"acc_{size}"]))
        assert by.loc["full", f"acc_{size}_low"] <= by.loc["full", f"acc_{size}"] <= by.loc["full", f"acc_{size}_high"]
    assert (paired["verdict"] == UNDECIDED).all()  # a handful of windows decides nothing
    tests = claim_tests(tiny_run, df, max_query_rate=1.0, tol=0.01).set_index("variant")
    assert list(tests.index) == ["selective-entropy-tau0.5"]
    assert tests["claim"].iloc[0] == UNDECIDED  # within 1 point by difference or not, the interval is too wide
    assert claim_tests(tiny_run, df, max_query_rate=-0.1)["claim"].tolist() == ["fails"]
    with pytest.raises(ValueError, match="no validation predictions of variant 'offline'"):
        paired_subnets(tiny_run, "offline", "none")
    prof = uncertainty_profile(tiny_run, "smoke", variant="none", n_bn_batches=2)
    assert prof["entropy"].between(0, 1).all() and len(prof) > 0
    curve = gate_curve(prof)
    assert curve["query_rate"].is_monotonic_decreasing and curve["errors_covered"].iloc[0] == 1.0


def test_middle_arch_is_between_smallest_and_largest():
    space = SearchSpace.for_scale("tutorial", 40, 11, n_frames=250)
    m = middle_arch(space)
    assert space.macs(space.smallest()) < space.macs(m) < space.macs(space.largest())
    assert middle_arch(space) == m  # deterministic
    assert variant_name(DistillConfig(mode="selective", tau=0.3, kind="margin")) == "selective-margin-tau0.3"


def test_train_cli_runs_one_variant(tiny_run):
    cmd = [sys.executable, "-m", "ersam_lib", "train", "--run-dir", str(tiny_run), "--scale", "smoke", "--mode", "none",
           "--epochs", "1", "--name", "cli"]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"} | {k: v for k, v in os.environ.items() if k == "PYTHONPATH"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tiny_run / "supernet" / "runs" / "cli" / "checkpoint.pt").exists()
    assert "acc_largest" in out.stdout


def test_final_variant_is_the_closest_to_full_within_the_query_budget():
    sel = tuple(DistillConfig(mode="selective", tau=t) for t in (0.5, 0.6, 0.7))
    acfg = AblationConfig(variants=(DistillConfig(mode="none"), DistillConfig(mode="full")) + sel)
    df = pd.DataFrame({"variant": ["none", "full"] + [variant_name(d) for d in sel],
                       "query_rate": [0.0, 1.0, 0.45, 0.28, 0.12]})
    assert acfg.pick_final(df).tau == 0.6
    over = df.assign(query_rate=[0.0, 1.0, 0.9, 0.8, 0.7])
    assert acfg.pick_final(over).tau == 0.7  # none within budget: the cheapest selective one
    assert AblationConfig(variants=sel, final=sel[0]).pick_final(df) == sel[0]


def test_offline_distillation_runs_the_teacher_once_per_sample_and_gives_full_distillations_targets(tiny_run, tmp_path):
    import shutil

    from ersam_lib.core.io import torch_load
    from ersam_lib.core.rundir import CHECKPOINT, variant_dir
    from ersam_lib.experiments.ablation import full_from_offline, train_variant
    from ersam_lib.measure.data import load_feature_data, subset
    from ersam_lib.models.teacher import load_teacher
    from ersam_lib.training.distill import cache_teacher_logits

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    data, teacher = load_feature_data(run_dir), load_teacher(run_dir)
    cached, passes = cache_teacher_logits(teacher, data.train, batch_size=5)
    assert len(cached) == len(data.train) and passes == -(-len(data.train) // 5)
    x, y, logits = cached[3]
    assert y == data.train[3][1] and torch.allclose(logits, teacher(x[None])[0], atol=1e-5)

    cfg = TrainConfig(epochs=2, batch_size=8, n_random=1, max_train_samples=16)
    rows = {m: train_variant(run_dir, "smoke", replace_distill(cfg, m), name=f"t-{m}", n_bn_batches=2, bn_batch_size=8)
            for m in ("full", "offline")}
    n = len(subset(data.train, 16, cfg.seed))  # two full batches of 8
    assert rows["full"]["samples_seen"] == rows["offline"]["samples_seen"] == 2 * n
    assert rows["full"]["teacher_samples"] == 2 * n and rows["full"]["query_rate"] == 1.0
    assert rows["offline"]["teacher_samples"] == n and rows["offline"]["query_rate"] == pytest.approx(0.5)
    assert rows["offline"]["teacher_forward_passes"] == -(-n // 8)
    assert rows["offline"]["teacher_gflops"] == pytest.approx(rows["full"]["teacher_gflops"] / 2)
    again = train_variant(run_dir, "smoke", replace_distill(cfg, "offline"), name="t-offline", n_bn_batches=2,
                          bn_batch_size=8)
    assert again["resumed_from_epoch"] == 2 and again["teacher_samples"] == n  # finished: no second teacher pass
    df = pd.DataFrame([rows["full"] | {"variant": "full"}, rows["offline"] | {"variant": "offline"}])
    check = claim_check(df, max_query_rate=0.6, tol=1.0)
    assert list(check["variant"]) == ["offline"] and check["claim_holds"].all()

    # on a fixed training set the two train the same supernet, bit for bit: what lets chapter 4 derive full's row
    weights = {m: torch_load(variant_dir(run_dir, f"t-{m}") / CHECKPOINT)["model"] for m in ("full", "offline")}
    assert weights["full"].keys() == weights["offline"].keys()
    assert all(torch.equal(weights["full"][k], weights["offline"][k]) for k in weights["full"])
    derived = full_from_offline(rows["offline"], DistillConfig(mode="full"))
    for k in ("acc_smallest", "acc_middle", "acc_largest", "mae_largest", "samples_seen", "teacher_samples",
              "teacher_forward_passes", "query_rate", "teacher_compute_saved"):
        assert derived[k] == rows["full"][k], k
    assert derived["teacher_gflops"] == pytest.approx(rows["full"]["teacher_gflops"])
    assert derived["variant"] == "full" and derived["wall_source"] == "derived from offline"
    assert rows["offline"]["teacher_cache_s"] > 0 and derived["wall_s"] > rows["offline"]["wall_s"]


def test_the_ablation_derives_full_distillation_from_its_offline_twin(tiny_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns("supernet"))
    variants = (DistillConfig(mode="none"), DistillConfig(mode="full"), DistillConfig(mode="offline"))
    acfg = AblationConfig(variants=variants, final=DistillConfig(mode="full"), n_bn_batches=2, bn_batch_size=8)
    cfg = TrainConfig(epochs=2, batch_size=8, n_random=1, max_train_samples=16)
    df = run_ablation(run_dir, "smoke", acfg=acfg, train_cfg=cfg)
    assert list(df["variant"]) == ["none", "full", "offline"]
    by = df.set_index("variant")
    assert list(by["wall_source"]) == ["measured", "derived from offline", "measured"]
    assert not (run_dir / "supernet" / "runs" / "full").exists()  # not trained
    for col in ("acc_smallest", "acc_middle", "acc_largest"):
        assert by.loc["full", col] == by.loc["offline", col]
    assert (paired_subnets(run_dir, "full", "offline")["diff_points"] == 0).all()  # the same predictions
    assert by.loc["full", "query_rate"] == 1.0 and by.loc["offline", "query_rate"] == pytest.approx(0.5)
    assert by.loc["full", "teacher_forward_passes"] == 2 * 2  # one pass per step: 2 epochs x 2 batches of 8
    _, _, info = load_supernet(run_dir)
    assert info["variant"] == "full"  # the final supernet is offline's weights under full's name

    trained = run_ablation(run_dir, "smoke", acfg=replace(acfg, derive_full=False), train_cfg=cfg)
    assert (trained["wall_source"] == "measured").all()
    assert trained.set_index("variant").loc["full", "acc_largest"] == by.loc["full", "acc_largest"]


def replace_distill(cfg: TrainConfig, mode: str) -> TrainConfig:
    return replace(cfg, distill=DistillConfig(mode=mode))


def test_a_waveform_teacher_distils_into_the_supernet_end_to_end(tiny_run, tmp_path):
    import shutil

    from ersam_lib.experiments.ablation import train_variant
    from ersam_lib.measure.data import PairedDataset, load_feature_data, paired_with_waveforms
    from ersam_lib.models.teacher import save_teacher, tiny_wav2vec2

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    data = load_feature_data(run_dir)
    torch.manual_seed(0)
    teacher = tiny_wav2vec2(data.n_classes, embed_dim=16, layers=1)
    save_teacher(run_dir, teacher, {"kind": "wav2vec2", "input": "waveform", "n_features": data.n_features,
                                    "n_classes": data.n_classes, "tiny": {"embed_dim": 16, "layers": 1},
                                    "data_key": data.key})
    x, y, wave = paired_with_waveforms(run_dir, data, "train")[0]
    assert x.shape == (data.n_features, data.n_frames) and wave.ndim == 1 and wave.shape[0] > x.shape[1]
    cfg = TrainConfig(epochs=1, batch_size=8, n_random=1, max_train_samples=16,
                      distill=DistillConfig(mode="selective", tau=0.0))
    row = train_variant(run_dir, "smoke", cfg, name="t-wave", n_bn_batches=2, bn_batch_size=8)
    assert row["teacher_samples"] > 0 and row["teacher_gflops"] > 0 and 0 <= row["acc_largest"] <= 1
    prof = uncertainty_profile(run_dir, "smoke", variant=row["variant"], n_bn_batches=2)
    assert len(prof) == len(data.val) and prof["teacher_correct"].isin([True, False]).all()
    with pytest.raises(ValueError, match="not the same mixture"):
        PairedDataset(data.train, list(zip([torch.zeros(3)] * len(data.train),
                                            [1 - data.train[i][1] for i in range(len(data.train))])))[0]


def test_a_damaged_variant_checkpoint_is_trained_again_not_resumed(tiny_run, tmp_path, capsys):
    """Issue 30, item 3: flipped bits in a finished variant's checkpoint still load; its digest makes chapter 4
    train the variant again (the same result as the first time) instead of resuming from it."""
    import shutil

    from ersam_lib.experiments.ablation import train_variant

    from .hostile import flip_exponents

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    cfg = TrainConfig.for_scale("smoke", epochs=2, distill=DistillConfig(mode="none"))
    first = train_variant(run_dir, "smoke", cfg, name="v", device="cpu")
    assert train_variant(run_dir, "smoke", cfg, name="v", device="cpu")["resumed_from_epoch"] == 2  # the control
    flip_exponents(run_dir / "supernet" / "runs" / "v" / "checkpoint.pt")
    capsys.readouterr()
    again = train_variant(run_dir, "smoke", cfg, name="v", device="cpu")
    assert again["resumed_from_epoch"] == 0 and "does not match the SHA-256" in capsys.readouterr().out
    assert again["acc_largest"] == first["acc_largest"] and again["final_loss_largest"] == first["final_loss_largest"]
