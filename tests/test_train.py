"""Supernet training (chapter 4): the sandwich step, checkpoints, resuming to the same state, evaluation, saving."""

import random

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ersam_lib.measure.evaluation import eval_loader
from ersam_lib.models.space import SearchSpace
from ersam_lib.models.supernet import Supernet, evaluate_arch, load_supernet, save_supernet
from ersam_lib.training.distill import DistillConfig, SelectiveTeacher
from ersam_lib.training.train import TrainConfig, sandwich_archs, sandwich_step, train_supernet

torch.set_num_threads(1)
F_, T_, K_ = 8, 32, 3


def make_data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K_, (n,), generator=g)
    x = torch.randn(n, F_, T_, generator=g) + y[:, None, None].float()  # learnable: the mean encodes the class
    return TensorDataset(x, y)


def make_supernet(seed=0):
    torch.manual_seed(seed)
    space = SearchSpace.for_scale("smoke", F_, K_, n_frames=T_)
    return Supernet(space), space


class MeanTeacher(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(7)  # the same teacher in every run
        self.lin = nn.Linear(F_, K_)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.lin(x.mean(2))


def small_cfg(**kw):
    base = dict(epochs=2, batch_size=8, n_random=1, lr=1e-2, warmup_epochs=0.5,
                distill=DistillConfig(mode="selective", tau=0.2))
    return TrainConfig(**(base | kw))


def test_config_for_scale_and_validation():
    assert TrainConfig.for_scale("smoke").epochs <= 3
    assert TrainConfig.for_scale("tutorial", epochs=3).epochs == 3
    with pytest.raises(ValueError):
        TrainConfig.for_scale("huge")
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)
    cfg = small_cfg()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_sandwich_archs_start_with_largest_and_smallest():
    _, space = make_supernet()
    archs = sandwich_archs(space, random.Random(0), 2)
    assert archs[0] == space.largest() and archs[1] == space.smallest() and len(archs) == 4
    assert all(space.contains(a) for a in archs)


def test_sandwich_step_updates_shared_weights_and_queries_teacher():
    net, space = make_supernet()
    x, y = make_data(8).tensors
    teacher = MeanTeacher()
    sel = SelectiveTeacher(teacher, DistillConfig(mode="full"))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = sandwich_step(net, sandwich_archs(space, random.Random(0), 1), (x, y), opt, sel, small_cfg())
    assert out["grad_norm"] > 0 and {"loss_largest", "loss_sub1", "loss_sub2"} <= set(out)
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert any("head" in k for k in changed) and len(changed) > 5
    assert teacher.calls == 1  # full mode: all 8 samples in one pass, reused by the 3 subnets
    assert sel.stats()["teacher_samples"] == 8


def test_largest_gate_queries_only_where_the_largest_is_uncertain():
    from ersam_lib.training.distill import uncertainty

    net, space = make_supernet()
    x, y = make_data(8).tensors
    cfg = DistillConfig(mode="selective", tau=0.9, gate_on="largest")
    teacher = MeanTeacher()
    sel = SelectiveTeacher(teacher, cfg)
    net.set_active_subnet(space.largest())
    with torch.no_grad():
        expected = int((uncertainty(net(x)) > cfg.tau).sum())
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    sandwich_step(net, sandwich_archs(space, random.Random(0), 1), (x, y), opt, sel, small_cfg(distill=cfg))
    assert 0 < expected  # an untrained net is unsure about most of them
    assert teacher.calls == 1  # one gate per step, decided by the largest subnet alone
    assert sel.stats()["teacher_samples"] == expected
    with pytest.raises(ValueError, match="gate_on"):
        DistillConfig(gate_on="smallest")


def test_gradients_are_clipped():
    net, space = make_supernet()
    x, y = make_data(8).tensors
    sel = SelectiveTeacher(None, DistillConfig(mode="none"))
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    sandwich_step(net, [space.largest()], (x * 100, y), opt, sel, small_cfg(grad_clip=0.01))
    total = torch.sqrt(sum((p.grad ** 2).sum() for p in net.parameters() if p.grad is not None))
    assert total.item() == pytest.approx(0.01, rel=1e-3)


def test_training_learns_and_logs_teacher_usage(tmp_path):
    net, space = make_supernet()
    res = train_supernet(net, space, make_data(32), small_cfg(epochs=3), tmp_path, teacher=MeanTeacher())
    assert len(res.history) == 3 and (tmp_path / "checkpoint.pt").exists() and (tmp_path / "history.json").exists()
    assert res.history[-1]["loss_largest"] < res.history[0]["loss_largest"]
    t = res.teacher
    assert t["samples_seen"] == 3 * 32 and 0 <= t["teacher_samples"] <= t["samples_seen"]
    assert t["query_rate"] == pytest.approx(t["teacher_samples"] / t["samples_seen"])
    assert t["teacher_gflops"] >= 0 and res.wall_s > 0


def test_resume_after_stop_reaches_the_same_state(tmp_path):
    cfg, data = small_cfg(epochs=3), make_data(24)
    net_a, space = make_supernet()
    full = train_supernet(net_a, space, data, cfg, tmp_path / "a", teacher=MeanTeacher())
    net_b, _ = make_supernet()
    part = train_supernet(net_b, space, data, cfg, tmp_path / "b", teacher=MeanTeacher(), stop_after_epoch=1)
    assert len(part.history) == 1
    net_c, _ = make_supernet(seed=123)  # a fresh process: different init, everything must come from the checkpoint
    torch.manual_seed(999)
    resumed = train_supernet(net_c, space, data, cfg, tmp_path / "b", teacher=MeanTeacher())
    assert resumed.resumed_from == 1 and len(resumed.history) == 3
    for k, v in net_a.state_dict().items():
        assert torch.equal(v, net_c.state_dict()[k]), k
    assert [h["loss_largest"] for h in resumed.history] == [h["loss_largest"] for h in full.history]
    assert resumed.teacher["teacher_samples"] == full.teacher["teacher_samples"]


def test_checkpoint_from_another_config_is_refused(tmp_path):
    net, space = make_supernet()
    train_supernet(net, space, make_data(16), small_cfg(epochs=1), tmp_path, teacher=MeanTeacher())
    with pytest.raises(ValueError, match="different TrainConfig"):
        train_supernet(net, space, make_data(16), small_cfg(epochs=1, lr=0.5), tmp_path, teacher=MeanTeacher())


def test_evaluate_arch_leaves_the_supernet_untouched_and_save_load_round_trips(tmp_path):
    net, space = make_supernet()
    data = make_data(16)
    train_supernet(net, space, data, small_cfg(epochs=1, distill=DistillConfig(mode="none")), tmp_path / "ck")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    scores = evaluate_arch(net, space.smallest(), eval_loader(data, 8), eval_loader(data, 8), n_bn_batches=2)
    assert 0.0 <= scores["acc"] <= 1.0 and scores["n"] == 16 and scores["mae"] >= 0
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    save_supernet(tmp_path / "run" / "supernet" / "supernet.pt", net, space, {"variant": "none"})
    loaded, space2, info = load_supernet(tmp_path / "run")
    assert info == {"variant": "none"} and space2.to_dict() == space.to_dict()
    x = data.tensors[0][:4]
    net.cpu().eval().set_active_subnet(space.largest())  # training left it on the GPU where there is one
    loaded.set_active_subnet(space.largest())
    with torch.no_grad():
        assert torch.allclose(net(x), loaded(x))
    with pytest.raises(FileNotFoundError, match="chapter 04"):
        load_supernet(tmp_path / "nothing")


def test_pick_device_auto_explicit_and_errors(monkeypatch):
    from ersam_lib.core.repro import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu") and pick_device(None) == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA GPU"):  # bad input: one line on the command line (issue 30)
        pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")  # under torchrun each process takes its own GPU
    assert pick_device("auto") == torch.device("cuda", 1)
    assert pick_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_training_on_the_gpu_matches_the_cpu_loosely_and_stays_on_the_gpu(tmp_path):
    cfg, data = small_cfg(epochs=3), make_data(32)
    net_cpu, space = make_supernet()
    cpu = train_supernet(net_cpu, space, data, cfg, tmp_path / "cpu", teacher=MeanTeacher(), device="cpu")
    net_gpu, _ = make_supernet()
    teacher = MeanTeacher()
    gpu = train_supernet(net_gpu, space, data, cfg, tmp_path / "gpu", teacher=teacher, device="cuda")
    assert next(net_gpu.parameters()).is_cuda and next(teacher.parameters()).is_cuda
    assert gpu.teacher["samples_seen"] == cpu.teacher["samples_seen"] == 3 * 32
    assert gpu.history[-1]["loss_largest"] == pytest.approx(cpu.history[-1]["loss_largest"], rel=0.05)
    scores = evaluate_arch(net_gpu, space.smallest(), eval_loader(data, 8), eval_loader(data, 8), n_bn_batches=2)
    assert scores["n"] == 32


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (self.marker,))


def test_a_checkpoint_with_code_or_from_other_inputs_is_not_resumed(tmp_path, capsys):
    from ersam_lib.core.io import atomic_torch_save

    cfg, data = small_cfg(epochs=2), make_data(16)
    marker = tmp_path / "payload-ran"
    atomic_torch_save({"config": cfg.to_dict(), "model": _Payload(marker)}, tmp_path / "ck" / "checkpoint.pt")
    net, space = make_supernet()
    res = train_supernet(net, space, data, cfg, tmp_path / "ck", teacher=MeanTeacher(), provenance={"data": "A"})
    assert not marker.exists() and res.resumed_from == 0 and len(res.history) == 2
    assert "refused to load it" in capsys.readouterr().out
    # resumed only with the same provenance: new data (or a new teacher) trains from scratch, never mixes
    net, _ = make_supernet()
    more = small_cfg(epochs=3)
    (tmp_path / "ck2").mkdir()
    part = train_supernet(net, space, data, more, tmp_path / "ck2", MeanTeacher(), stop_after_epoch=1,
                          provenance={"data": "A"})
    assert part.resumed_from == 0
    again = train_supernet(make_supernet()[0], space, data, more, tmp_path / "ck2", MeanTeacher(),
                           provenance={"data": "B"})
    assert again.resumed_from == 0 and "trained on other inputs" in capsys.readouterr().out
    same = train_supernet(make_supernet()[0], space, data, small_cfg(epochs=3), tmp_path / "ck2", MeanTeacher(),
                          provenance={"data": "B"})
    assert same.resumed_from == 3


def test_load_supernet_refuses_code_damage_and_other_data(tmp_path):
    import json

    from ersam_lib.core.io import ArtifactError, atomic_torch_save, write_digest

    net, space = make_supernet()
    path = tmp_path / "run" / "supernet" / "supernet.pt"
    marker = tmp_path / "payload-ran"
    atomic_torch_save({"model": _Payload(marker), "space": space.to_dict(), "info": {}}, path)
    with pytest.raises(ArtifactError, match=r"supernet\.pt holds objects other than tensors .*--only 04$"):
        load_supernet(tmp_path / "run")
    assert not marker.exists()
    path.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ArtifactError, match=r"supernet\.pt does not match the SHA-256 .*--only 04$"):
        load_supernet(tmp_path / "run")  # the digest recorded beside it finds the damage first
    write_digest(path)  # a record that matches: the reader itself finds it unreadable
    with pytest.raises(ArtifactError, match=r"supernet\.pt is not a readable checkpoint"):
        load_supernet(tmp_path / "run")
    meta = tmp_path / "run" / "data" / "features" / "logmel" / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"format": 2, "key": "A"}))
    save_supernet(path, net, space, {"variant": "none", "provenance": {"data": "A"}})
    assert load_supernet(tmp_path / "run")[2]["provenance"] == {"data": "A"}
    meta.write_text(json.dumps({"format": 2, "key": "B"}))  # chapter 1 rebuilt the data since
    with pytest.raises(ArtifactError, match="made from other data than the run holds now .its content key differs: chapter 01"):
        load_supernet(tmp_path / "run")


def test_a_derived_seed_depends_on_every_key_and_on_nothing_else() -> None:
    from ersam_lib.core.repro import derived_seed

    seed = derived_seed(0, 3, 17, 2)
    assert seed == derived_seed(0, 3, 17, 2) and 0 <= seed < 2**32
    assert len({seed, derived_seed(1, 3, 17, 2), derived_seed(0, 3, 17, 3), derived_seed(0, 3, 2, 17)}) == 4


def test_train_cli_asking_for_a_gpu_it_lacks_is_one_line(tmp_path, monkeypatch, capsys):
    """Issue 30, item 8: ``train --device cuda`` without a GPU (or an unknown device) is bad input: exit 2, one
    line, before any data is read."""
    from ersam_lib.app import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, words in (("cuda", "no CUDA GPU"), ("tpu", "unknown device")):
        assert cli.main(["train", "--run-dir", str(tmp_path), "--device", device]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err and "Traceback" not in err, err
