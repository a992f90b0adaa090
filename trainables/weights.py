"""How far training moved the weights: ‖θ − θ₀‖₂ over a model's trainable parameters, the
``weight_distance`` column of the curves (small batches travel further at equal epochs:
Hoffer et al. 2017, Keskar et al. 2016).

    from trainables.weights import DistanceFromInit
    torch.manual_seed(config.seed)
    model = build_model()
    distance = DistanceFromInit(model)   # before training, and before loading a checkpoint
    ...
    row["weight_distance"] = distance(model)

θ₀ is the freshly built model, so a trial that resumes rebuilds it from the same seed and
the checkpoint never carries a second copy of the weights.
"""

from __future__ import annotations

import torch
from torch import nn


class DistanceFromInit:
    """‖θ − θ₀‖₂ of a model against its weights when this was made (kept on their device)."""

    def __init__(self, model: nn.Module) -> None:
        self.init = [p.detach().clone() for p in model.parameters() if p.requires_grad]

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> float:
        now = [p for p in model.parameters() if p.requires_grad]
        if len(now) != len(self.init):
            raise ValueError(f"the model has {len(now)} trainable tensors, its initial weights {len(self.init)}")
        norms = [torch.linalg.vector_norm(p.float() - q.float()) for p, q in zip(now, self.init, strict=True)]
        return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
