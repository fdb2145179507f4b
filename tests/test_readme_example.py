"""The README's Python example, on a user-defined CNN and the user's own training loop."""

import torch
from torch import nn

import deepcompress as dc
from deepcompress.data import load_digits


class MyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * 8, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1))))


def train(model, data, epochs=15):
    opt = torch.optim.SGD(model.parameters(), lr=0.05 if epochs > 5 else 0.002, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(data), generator=g).split(64):
            loss = nn.functional.cross_entropy(model(data.x[idx]), data.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def accuracy(model, data):
    with torch.no_grad():
        return float((model(data.x).argmax(1) == data.y).float().mean())


def test_readme_example(tmp_path):
    torch.manual_seed(0)
    ds = load_digits()
    model = MyNet()
    train(model, ds.train)
    dense_acc = accuracy(model, ds.val)
    dc.prune_(model, sparsity=0.7)
    train(model, ds.train)
    dc.prune_(model, sparsity={"fc1": 0.9, "conv": 0.5})
    train(model, ds.train)
    dc.quantize_(model, bits={"conv": 8, "linear": 5})
    train(model, ds.train, epochs=3)
    in_memory = accuracy(model, ds.val)
    size = dc.save(model, tmp_path / "model.dcz")
    net = dc.load(tmp_path / "model.dcz", model=MyNet())
    assert accuracy(net, ds.val) == in_memory  # the file holds exactly the trained model
    assert accuracy(net, ds.val) > dense_acc - 0.03
    assert (net.fc1.weight == 0).float().mean() >= 0.9 - 1e-3
    original = 4 * sum(p.numel() for p in MyNet().parameters())
    assert original / size > 8
