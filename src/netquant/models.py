"""The paper's three networks.

- ``lenet5``: Caffe's MNIST LeNet ("simplified LeNet-5"): conv 20@5x5, maxpool, conv 50@5x5, maxpool,
  fc 800-500, ReLU, fc 500-10. 431,080 parameters.
- ``resnet32``: He et al. (2016) CIFAR ResNet with n=5 (3 stages x 5 basic blocks), 16/32/64 channels,
  parameter-free option-A shortcuts (stride-2 subsampling and zero-padded channels). 464,154 parameters.
- ``alexnet``: torchvision's AlexNet (61.1 M parameters); ImageNet weights from a local file or from
  torchvision when online.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from netquant.vocabulary import ARCHS


class LeNet5(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        side = ((input_size - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(50 * side * side, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(x), 2)  # Caffe's LeNet has no ReLU after the convolutions
        x = F.max_pool2d(self.conv2(x), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


class ShortcutA(nn.Module):
    """Option-A identity shortcut: subsample spatially, zero-pad the new channels (no parameters)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = ShortcutA(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    def __init__(self, depth: int = 32, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def build(arch: str, *, num_classes: int | None = None, in_channels: int | None = None,
          input_size: int | None = None, pretrained: str | None = None) -> nn.Module:
    """Build a network by name. Defaults are the paper's datasets (MNIST 1x28x28, CIFAR 3x32x32, ImageNet).

    ``pretrained``: AlexNet - a local file with torchvision's ImageNet state_dict, or "torchvision" to
    fetch torchvision's weights (needs internet); LeNet-5, ResNet-32 - a netquant checkpoint (e.g. a
    baseline trained elsewhere, ``results/<net>/baseline/model.pt``) or a plain state_dict file.
    """
    if arch in ("lenet5", "resnet32"):
        model = (LeNet5(in_channels or 1, num_classes or 10, input_size or 28) if arch == "lenet5"
                 else ResNetCifar(32, num_classes or 10, in_channels or 3))
        if pretrained:
            model.load_state_dict(_weights_file(pretrained, arch))
        return model
    if arch == "alexnet":
        from torchvision.models import AlexNet_Weights, alexnet

        if pretrained == "torchvision":
            return alexnet(weights=AlexNet_Weights.IMAGENET1K_V1)
        model = alexnet(weights=None, num_classes=num_classes or 1000)
        if pretrained:
            if not os.path.exists(pretrained):
                raise FileNotFoundError(
                    f"AlexNet weights file {pretrained!r} not found: set config key "
                    "'alexnet.pretrained' to torchvision's alexnet-owt-7be5be79.pth or to 'torchvision' (online)"
                )
            model.load_state_dict(torch.load(pretrained, map_location="cpu", weights_only=True))
        return model
    raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")


def _weights_file(path: str, arch: str) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file {path!r} not found: set config key '{arch}.pretrained' to a netquant "
                                "checkpoint or a state_dict file, or to null to train")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(payload, dict) and payload.get("format") == "netquant-checkpoint-1":
        if payload["arch"] != arch:
            raise ValueError(f"{path} holds a {payload['arch']} checkpoint, not {arch} (config key '{arch}.pretrained')")
        return payload["state_dict"]
    return payload


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
