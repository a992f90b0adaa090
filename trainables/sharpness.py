"""Sharpness: the top eigenvalue of the training-loss Hessian, by power iteration.

Each iteration is one Hessian-vector product (double backward through the loss), so the
cost is bounded by ``max_iter`` gradient-sized backward passes. The loss should be
evaluated on a fixed subset of the training data (and with the model in a fixed mode,
e.g. ``model.eval()`` if batch-norm statistics must not change): power iteration needs
the same Hessian at every step. The random start vector comes from ``seed``, so the same
weights and subset give the same estimate.

    >>> import torch
    >>> from trainables.sharpness import top_hessian_eigenvalue
    >>> a = torch.diag(torch.tensor([5.0, 2.0, 1.0], dtype=torch.float64))
    >>> w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    >>> lam = top_hessian_eigenvalue(lambda: 0.5 * w @ a @ w, [w])
    >>> round(lam, 3)
    5.0

With a model: ``idx = fixed_subset(len(train_x), 1024)``, then
``top_hessian_eigenvalue(lambda: criterion(model(train_x[idx]), train_y[idx]),
list(model.parameters()))``.

Power iteration converges to the eigenvalue of largest magnitude; when that is negative
(possible away from a minimum), a second, shifted run finds the largest positive one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["top_hessian_eigenvalue", "hessian_vector_product", "fixed_subset"]


def fixed_subset(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of ``min(size, n)`` examples out of ``n``, the same for every call.

    Measure sharpness at every checkpoint of a trial on the same examples, so changes
    over training are changes of the weights, not of the sample.
    """
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[: min(size, n)].sort().values


def _dot(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([(x * y).sum() for x, y in zip(xs, ys)]).sum()


def hessian_vector_product(
    grads: Sequence[torch.Tensor], params: Sequence[torch.Tensor], vec: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """H v, from gradients built with ``create_graph=True``: ∂(g·v)/∂θ.

    The graph is kept so that one gradient computation serves every iteration.
    """
    hv = torch.autograd.grad(_dot(grads, vec), params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(hv, params)]


def _power_iteration(
    grads: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    max_iter: int,
    tol: float,
    seed: int,
    shift: float = 0.0,
) -> float | None:
    """Dominant (largest-magnitude) eigenvalue of H - shift*I, by power iteration."""
    # The start vector is drawn on the CPU from its own generator: reproducible across
    # devices and independent of the global RNG (which training also uses).
    gen = torch.Generator().manual_seed(seed)
    vec = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.device, p.dtype) for p in params]
    eig: float | None = None
    for _ in range(max_iter):
        norm = torch.sqrt(_dot(vec, vec))
        if norm == 0 or not torch.isfinite(norm):
            break
        vec = [v / norm for v in vec]
        hv = hessian_vector_product(grads, params, vec)
        if shift:
            hv = [h - shift * v for h, v in zip(hv, vec)]
        new = float(_dot(vec, hv))  # Rayleigh quotient with |v| = 1
        converged = eig is not None and abs(new - eig) < tol * abs(new)
        eig, vec = new, hv
        if converged:
            break
    return eig


def top_hessian_eigenvalue(
    loss_fn: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    max_iter: int = 20,
    tol: float = 1e-3,
    seed: int = 0,
) -> float:
    """Largest (most positive) eigenvalue of the Hessian of ``loss_fn()`` w.r.t. ``params``.

    ``loss_fn`` recomputes the scalar loss (on a fixed subset); ``params`` require grad.
    Power iteration finds the largest-magnitude eigenvalue λ₁ within ``max_iter``
    Hessian-vector products (or once the Rayleigh quotient changes by less than ``tol``
    relative); if λ₁ < 0 a negative direction dominates, and a second run on H − λ₁I (whose
    eigenvalues are all ≥ 0) gives the top one. Parameter gradients (``.grad``) are left
    untouched.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no parameter requires grad")
    with torch.enable_grad():
        grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
        eig = _power_iteration(grads, params, max_iter, tol, seed)
        if eig is not None and eig < 0:
            shifted = _power_iteration(grads, params, max_iter, tol, seed, shift=eig)
            eig = None if shifted is None else shifted + eig
    return float("nan") if eig is None else eig
