"""Optimizers of the torch trainables: SGD with momentum, AdamW, LARS."""

from __future__ import annotations

from collections.abc import Iterable

import torch


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a per-tensor trust ratio (You et al. 2017).

    The local learning rate of each weight tensor is ``eta * |w| / (|g| + wd * |w|)``;
    biases and 1-D tensors (norm gains) use the plain learning rate, as usual for LARS.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
    ) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if p.ndim > 1:
                    w_norm, g_norm = p.norm(), g.norm()
                    if group["weight_decay"]:
                        g = g.add(p, alpha=group["weight_decay"])
                    denom = g_norm + group["weight_decay"] * w_norm
                    trust = torch.where(
                        (w_norm > 0) & (denom > 0), group["eta"] * w_norm / denom, torch.ones_like(w_norm)
                    )
                    g = g * trust
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = g.clone()
                else:
                    buf.mul_(group["momentum"]).add_(g)
                p.add_(buf, alpha=-group["lr"])
        return None


def make_optimizer(
    name: str, params: Iterable[torch.Tensor], lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """The study's optimizer: sgd (heavy ball), adamw (beta1 = momentum) or lars."""
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)
    if name == "lars":
        return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def set_hyper(opt: torch.optim.Optimizer, lr: float, momentum: float) -> None:
    """This update's learning rate and momentum (adamw: beta1) on every parameter group."""
    for g in opt.param_groups:
        g["lr"] = lr
        if "betas" in g:
            g["betas"] = (momentum, g["betas"][1])
        elif "momentum" in g:
            g["momentum"] = momentum
