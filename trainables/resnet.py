"""ResNet-50 as torchvision writes it (v1.5: the stride on the 3×3 conv), random init, no
weights; and ghost batch norm.

The parameter names are torchvision's (``conv1``, ``layer1.0.conv2``, ``layer2.0.downsample.0``,
``fc``...), so a state dict moves between the two. ``width`` (64 in ResNet-50) and
``layers`` ((3, 4, 6, 3)) shrink it for tests; ``zero_init_residual`` starts every block's
last BN gain at 0, as Goyal et al. do (torchvision's default is off).

Ghost batch norm (Hoffer et al. 2017) normalises each run of ``ghost`` consecutive examples
of a batch with its own statistics, and updates the running statistics once per ghost batch,
in order; so a batch of 64 with ghost 16 computes what four micro-batches of 16 do.

    >>> import torch
    >>> from trainables.resnet import resnet50
    >>> resnet50(num_classes=10, width=8, layers=(1, 1, 1, 1))(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over ghost batches of ``ghost`` examples in training (0: plain BN)."""

    def __init__(self, num_features: int, ghost: int = 0, **kw: float) -> None:
        super().__init__(num_features, **kw)  # type: ignore[arg-type]
        self.ghost = ghost

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if not self.training or self.ghost <= 0 or n <= self.ghost:
            return super().forward(x)
        if n % self.ghost:  # a ragged tail: one plain BN call per ghost batch
            return torch.cat([super(GhostBatchNorm2d, self).forward(c) for c in x.split(self.ghost)])
        g = n // self.ghost
        xg = x.unflatten(0, (g, self.ghost)).float()
        mean = xg.mean(dim=(1, 3, 4))
        var = xg.var(dim=(1, 3, 4), unbiased=False)
        y = (xg - mean[:, None, :, None, None]) * torch.rsqrt(var + self.eps)[:, None, :, None, None]
        if self.affine:
            y = y * self.weight[None, None, :, None, None] + self.bias[None, None, :, None, None]
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            self._update_running(mean.detach(), var.detach(), self.ghost * x.shape[2] * x.shape[3])
        return y.flatten(0, 1).to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        # g sequential updates r <- (1-m) r + m s_j, in closed form
        m = float(self.momentum if self.momentum is not None else 0.1)
        g = mean.shape[0]
        w = m * (1 - m) ** torch.arange(g - 1, -1, -1, device=mean.device, dtype=mean.dtype)
        unbiased = var * count / max(count - 1, 1)
        assert self.running_mean is not None and self.running_var is not None
        self.running_mean.mul_((1 - m) ** g).add_((w[:, None] * mean).sum(0).to(self.running_mean.dtype))
        self.running_var.mul_((1 - m) ** g).add_((w[:, None] * unbiased).sum(0).to(self.running_var.dtype))
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(g)


Norm = Callable[[int], nn.Module]


def ghost_norm(ghost: int) -> Norm:
    """A norm-layer factory: ghost BN of ``ghost`` examples (0: BatchNorm2d)."""
    return lambda c: GhostBatchNorm2d(c, ghost) if ghost > 0 else nn.BatchNorm2d(c)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided), 1×1 expand ×4, with a projection shortcut where shapes change."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, norm: Norm) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = norm(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = norm(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), norm(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


class ResNet(nn.Module):
    """torchvision's ResNet with Bottleneck blocks."""

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        num_classes: int = 1000,
        width: int = 64,
        norm: Norm | None = None,
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        norm = norm or ghost_norm(0)
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = width
        stages = []
        for i, blocks in enumerate(layers):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            stage = []
            for j in range(blocks):
                stage.append(Bottleneck(inplanes, planes, stride if j == 0 else 1, norm))
                inplanes = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = (stages + [nn.Identity()] * 4)[:4]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(
    num_classes: int = 1000,
    width: int = 64,
    layers: Sequence[int] = (3, 4, 6, 3),
    ghost: int = 0,
    zero_init_residual: bool = True,
) -> ResNet:
    """ResNet-50 (or a narrower / shallower one for tests), random init."""
    return ResNet(layers, num_classes, width, ghost_norm(ghost), zero_init_residual)
