"""The paper's networks: its LeNets and its ImageNet AlexNet and VGG-16 (no torchvision
needed), the small MLP of the offline demo, and the paper's per-layer kept fractions."""

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


class AlexNet(nn.Module):
    """The Caffe AlexNet of the paper (ImageNet, 227x227 input, 60,965,224 parameters).

    conv1 96@11x11/4, conv2 256@5x5 (2 groups), conv3 384@3x3, conv4 384@3x3 (2 groups),
    conv5 256@3x3 (2 groups), each conv with ReLU, max-pools after conv1, conv2 and conv5
    (local response normalisation is left out: it has no weights), fc6 9216->4096, fc7
    4096->4096, fc8 4096->1000.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, stride=4)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=2)
        self.fc6 = nn.Linear(256 * 6 * 6, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, 227, 227)
        pool = nn.functional.max_pool2d
        x = pool(torch.relu(self.conv1(x)), 3, 2)  # (B, 96, 27, 27)
        x = pool(torch.relu(self.conv2(x)), 3, 2)  # (B, 256, 13, 13)
        x = torch.relu(self.conv4(torch.relu(self.conv3(x))))
        x = pool(torch.relu(self.conv5(x)), 3, 2)  # (B, 256, 6, 6)
        x = self.dropout(torch.relu(self.fc6(x.flatten(1))))
        x = self.dropout(torch.relu(self.fc7(x)))
        return self.fc8(x)


#: VGG-16's convolutions (output channels; "M" = 2x2 max-pool), configuration D.
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


class VGG16(nn.Module):
    """VGG-16 (configuration D, ImageNet, 224x224 input, 138,357,544 parameters).

    Its `state_dict()` keys are torchvision's (`features.0.weight` ... `classifier.6.bias`), so
    a torchvision checkpoint loads into it.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in VGG16_CFG + ["M"]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                c_in = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, 224, 224)
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def _vgg_conv_names() -> list[str]:
    names, i, block, conv = [], 0, 1, 1
    for v in VGG16_CFG + ["M"]:
        if v == "M":
            i, block, conv = i + 1, block + 1, 1
        else:
            names.append((f"features.{i}", f"conv{block}_{conv}"))
            i, conv = i + 2, conv + 1
    return names


#: The paper's kept fraction of weights per layer (Tables 4 and 5 of Han et al. 2016), by this
#: module's layer names. VGG-16's conv fractions are from the paper's Table 5 (its text in
#: ../shared/PAPER.md gives only fc6/fc7/fc8 and the 7.5% overall, which these reproduce).
PAPER_KEPT: dict[str, dict[str, float]] = {
    "lenet-300-100": {"ip1": 0.08, "ip2": 0.09, "ip3": 0.26},
    "lenet-5": {"conv1": 0.66, "conv2": 0.12, "ip1": 0.08, "ip2": 0.19},
    "alexnet": {
        "conv1": 0.84,
        "conv2": 0.38,
        "conv3": 0.35,
        "conv4": 0.37,
        "conv5": 0.37,
        "fc6": 0.09,
        "fc7": 0.09,
        "fc8": 0.25,
    },
    "vgg-16": {
        **dict(
            zip(
                [layer for layer, _ in _vgg_conv_names()],
                [0.58, 0.22, 0.34, 0.36, 0.53, 0.24, 0.42, 0.32, 0.27, 0.34, 0.35, 0.29, 0.36],
            )
        ),
        "classifier.0": 0.04,
        "classifier.3": 0.04,
        "classifier.6": 0.23,
    },
}

MODELS = {
    "lenet-300-100": LeNet300100,
    "lenet-5": LeNet5,
    "digits-mlp": DigitsMLP,
    "alexnet": AlexNet,
    "vgg-16": VGG16,
}


def build(name: str) -> nn.Module:
    """A fresh model by its CLI name."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name]()
