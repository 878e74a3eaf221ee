"""Supernet training under DistributedDataParallel (chapter 4): 2 CPU processes on gloo run sandwich steps."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        import sys

        sys.path.insert(0, os.path.dirname(__file__))  # spawned children do not inherit pytest's rootdir path
        from test_train import MeanTeacher, make_data, make_supernet, small_cfg

        from ersam_lib.training.train import train_supernet

        net, space = make_supernet(seed=0)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        res = train_supernet(net, space, make_data(32), small_cfg(epochs=1), os.path.join(out_dir, "ck"),
                             teacher=MeanTeacher())
        changed = sum(not torch.equal(v, before[k]) for k, v in net.state_dict().items())
        torch.save({"params": {k: p.detach() for k, p in net.named_parameters()}, "changed": changed,
                    "seen": res.teacher["samples_seen"]}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_gloo_processes_train_in_lockstep(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["changed"] > 5
    # the ranks shared the 32 samples (the reported count is summed over ranks); gradients were averaged, so the
    # weights are identical on both ranks
    assert r0["seen"] == r1["seen"] == 32
    for k, v in r0["params"].items():
        assert torch.allclose(v, r1["params"][k], atol=1e-6), k
    assert (tmp_path / "ck" / "checkpoint.pt").exists()  # written by rank 0 only
