"""Uncertainty-gated distillation (chapter 4): scores, the gate, KD loss and the query-counting teacher."""

import math

import pytest
import torch
from torch import nn

from ersam_lib.training.distill import (DistillConfig, SelectiveTeacher, kd_loss, select_uncertain,
                                        teacher_flops_per_sample, uncertainty)

torch.set_num_threads(1)


def test_uncertainty_is_zero_when_certain_and_one_when_uniform():
    certain = torch.tensor([[20.0, 0.0, 0.0, 0.0]])
    uniform = torch.zeros(1, 4)
    for kind in ("entropy", "margin"):
        assert uncertainty(certain, kind).item() == pytest.approx(0.0, abs=1e-6)
        assert uncertainty(uniform, kind).item() == pytest.approx(1.0, abs=1e-6)


def test_entropy_matches_its_definition():
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    p = logits.softmax(1)[0]
    expected = -(p * p.log()).sum().item() / math.log(3)
    assert uncertainty(logits, "entropy").item() == pytest.approx(expected, rel=1e-5)
    top = p.sort(descending=True).values
    assert uncertainty(logits, "margin").item() == pytest.approx(1 - (top[0] - top[1]).item(), rel=1e-5)


def test_uncertainty_rejects_bad_input():
    with pytest.raises(ValueError):
        uncertainty(torch.zeros(3))
    with pytest.raises(ValueError):
        uncertainty(torch.zeros(2, 3), "variance")  # type: ignore[arg-type]


def test_gate_modes():
    logits = torch.tensor([[10.0, 0.0], [0.1, 0.0], [0.0, 0.0]])
    assert select_uncertain(logits, DistillConfig(mode="none")).tolist() == [False, False, False]
    assert select_uncertain(logits, DistillConfig(mode="full")).tolist() == [True, True, True]
    assert select_uncertain(logits, DistillConfig(mode="selective", tau=0.5)).tolist() == [False, True, True]


def test_config_validates():
    with pytest.raises(ValueError, match="mode"):
        DistillConfig(mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tau"):
        DistillConfig(tau=1.5)
    assert DistillConfig(mode="selective", tau=0.3).label() == "selective τ=0.3"


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise():
    s = torch.randn(4, 5, requires_grad=True)
    assert torch.allclose(kd_loss(s, s.detach()), torch.zeros(4), atol=1e-6)
    t = torch.randn(4, 5)
    loss = kd_loss(s, t, temperature=2.0)
    assert loss.shape == (4,) and (loss > 0).all()
    loss.sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


class RecordingTeacher(nn.Module):
    """Stand-in teacher that remembers which rows (by their id in column 0) it saw."""

    def __init__(self, n_classes: int = 3):
        super().__init__()
        self.lin = nn.Linear(2, n_classes)
        self.seen: list[list[int]] = []

    def forward(self, x):
        self.seen.append(x[:, 0].long().tolist())
        return self.lin(x)


def test_teacher_is_called_on_exactly_the_selected_samples():
    teacher = RecordingTeacher()
    st = SelectiveTeacher(teacher, DistillConfig(mode="selective", tau=0.5, kind="entropy"))
    x = torch.stack([torch.arange(6.0), torch.zeros(6)], dim=1)  # column 0 = sample id
    sharp, flat = [8.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    student_a = torch.tensor([sharp, flat, sharp, flat, sharp, sharp])  # uncertain: 1, 3
    student_b = torch.tensor([sharp, flat, flat, sharp, sharp, flat])  # uncertain: 1, 2, 5
    st.begin_step(x)
    mask_a, t_a = st.targets(student_a)
    assert mask_a.tolist() == [False, True, False, True, False, False]
    assert teacher.seen == [[1, 3]]
    mask_b, t_b = st.targets(student_b)
    assert teacher.seen == [[1, 3], [2, 5]]  # sample 1 was cached within the step, not asked again
    with torch.no_grad():
        expected = teacher.lin(x)
    assert torch.allclose(t_b[mask_b], expected[mask_b])
    st.begin_step(x)  # a new step forgets the cache
    st.targets(torch.tensor([sharp] * 5 + [flat]))
    assert teacher.seen[-1] == [5]
    stats = st.stats()
    assert stats["samples_seen"] == 12
    assert stats["teacher_samples"] == 4 + 1
    assert stats["teacher_forward_passes"] == 3
    assert stats["query_rate"] == pytest.approx(5 / 12)
    assert stats["teacher_compute_saved"] == pytest.approx(7 / 12)


def test_teacher_not_called_when_nothing_is_uncertain_or_mode_none():
    teacher = RecordingTeacher()
    st = SelectiveTeacher(teacher, DistillConfig(mode="selective", tau=0.9))
    st.begin_step(torch.zeros(3, 2))
    mask, t = st.targets(torch.tensor([[9.0, 0.0, 0.0]] * 3))
    assert not mask.any() and t is None and teacher.seen == []
    none = SelectiveTeacher(None, DistillConfig(mode="none"))
    none.begin_step(torch.zeros(3, 2))
    assert none.targets(torch.zeros(3, 3))[1] is None
    assert none.stats()["query_rate"] == 0.0
    with pytest.raises(ValueError, match="needs a teacher"):
        SelectiveTeacher(None, DistillConfig(mode="full"))


def test_teacher_is_frozen_and_counters_round_trip():
    teacher = RecordingTeacher()
    st = SelectiveTeacher(teacher, DistillConfig(mode="full"), flops_per_sample=teacher_flops_per_sample(
        teacher, torch.zeros(1, 2)))
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    st.begin_step(torch.zeros(4, 2))
    st.targets(torch.zeros(4, 3))
    stats = st.stats()
    assert stats["teacher_gflops"] > 0 and stats["teacher_gflops_saved"] == 0
    other = SelectiveTeacher(teacher, DistillConfig(mode="full"))
    other.load_state_dict(st.state_dict())
    assert other.stats()["teacher_samples"] == 4


def test_class_count_mismatch_is_reported():
    st = SelectiveTeacher(RecordingTeacher(n_classes=4), DistillConfig(mode="full"))
    st.begin_step(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="classes"):
        st.targets(torch.zeros(2, 3))
