"""The training loop's distillation: the student moves toward the teacher's soft targets."""

import copy

import pytest
import torch
from torch import nn

from deepcompress.pipeline.data import Split
from deepcompress.pipeline.train import TrainConfig, train


def kl_to(teacher, student, x, t=4.0):
    with torch.no_grad():
        p = torch.log_softmax(teacher(x) / t, 1)
        q = torch.log_softmax(student(x) / t, 1)
        return float(nn.functional.kl_div(q, p, log_target=True, reduction="batchmean"))


def test_distillation_pulls_the_student_to_the_teacher():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    x = torch.randn(512, 1, 4, 4)
    labels = torch.randint(0, 5, (512,))  # random labels: CE alone pulls away from the teacher
    data = Split(x, labels)
    start = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in start.parameters():
            p.add_(0.3 * torch.randn_like(p))
    results = {}
    for alpha in (0.0, 1.0):
        student = copy.deepcopy(start)
        cfg = TrainConfig(epochs=15, lr=0.05, shift=0, label_smoothing=0.0, distill=alpha)
        train(student, data, cfg, progress=False, teacher=teacher if alpha else None)
        results[alpha] = kl_to(teacher, student, x)
    before = kl_to(teacher, start, x)
    assert results[1.0] < 0.2 * before  # pure distillation converges to the teacher
    assert results[1.0] < 0.5 * results[0.0]  # and plain training on other labels does not


def test_distillation_without_a_teacher_is_refused():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    data = Split(torch.randn(8, 1, 2, 2), torch.randint(0, 2, (8,)))
    with pytest.raises(ValueError, match="teacher"):
        train(net, data, TrainConfig(epochs=1, lr=0.1, shift=0, distill=0.5), progress=False)
