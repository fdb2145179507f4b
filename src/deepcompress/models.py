"""The paper's LeNets (Caffe definitions) and the small MLP of the offline demo."""

from __future__ import annotations

import torch
from torch import nn


class LeNet300100(nn.Module):
    """LeNet-300-100: 784-300-100-10 with ReLU (266,610 parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.ip1 = nn.Linear(784, 300)
        self.ip2 = nn.Linear(300, 100)
        self.ip3 = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 28, 28) or (B, 784)
        x = x.flatten(1)
        x = torch.relu(self.ip1(x))
        x = torch.relu(self.ip2(x))
        return self.ip3(x)


class LeNet5(nn.Module):
    """The Caffe LeNet-5 of the paper (431,080 parameters).

    conv1 20@5x5, max-pool 2, conv2 50@5x5, max-pool 2, ip1 800->500, ReLU, ip2 500->10.
    (As in Caffe's `lenet_train_test.prototxt`, there is no non-linearity after the convs.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.ip1 = nn.Linear(800, 500)
        self.ip2 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 28, 28)
        x = nn.functional.max_pool2d(self.conv1(x), 2)  # (B, 20, 12, 12)
        x = nn.functional.max_pool2d(self.conv2(x), 2)  # (B, 50, 4, 4)
        x = torch.relu(self.ip1(x.flatten(1)))  # (B, 500)
        return self.ip2(x)


class DigitsMLP(nn.Module):
    """The demo's MLP for scikit-learn's 8x8 digits: 64-128-64-10 with ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.ip1 = nn.Linear(64, 128)
        self.ip2 = nn.Linear(128, 64)
        self.ip3 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        x = torch.relu(self.ip1(x))
        x = torch.relu(self.ip2(x))
        return self.ip3(x)


MODELS = {"lenet-300-100": LeNet300100, "lenet-5": LeNet5, "digits-mlp": DigitsMLP}


def build(name: str) -> nn.Module:
    """A fresh model by its CLI name."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name]()
