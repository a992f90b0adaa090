"""Top Hessian eigenvalue by power iteration on Hessian-vector products."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from trainables import sharpness
from trainables.sharpness import fixed_subset, hessian_vector_product, top_hessian_eigenvalue


def _spd_with_gap(n: int, top: float, rest_max: float, seed: int) -> torch.Tensor:
    """Random SPD matrix with eigenvalues top and uniform(0.1, rest_max)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    eig = torch.rand(n, generator=gen, dtype=torch.float64) * (rest_max - 0.1) + 0.1
    eig[0] = top
    return (q * eig) @ q.T


def test_quadratic_with_known_spectrum() -> None:
    a = _spd_with_gap(50, top=10.0, rest_max=7.0, seed=0)
    true_top = float(torch.linalg.eigvalsh(a)[-1])
    # the parameters are split in two tensors, as in a model with several weight tensors
    w1 = torch.randn(30, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(20, dtype=torch.float64, requires_grad=True)

    def loss() -> torch.Tensor:
        w = torch.cat([w1, w2])
        return 0.5 * w @ a @ w

    est = top_hessian_eigenvalue(loss, [w1, w2])
    assert est == pytest.approx(true_top, rel=0.01)
    assert top_hessian_eigenvalue(loss, [w1, w2]) == est  # fixed seed: reproducible
    assert w1.grad is None and w2.grad is None  # .grad left untouched
    # the HVP itself is exact
    v = [torch.ones(30, dtype=torch.float64), torch.zeros(20, dtype=torch.float64)]
    grads = torch.autograd.grad(loss(), [w1, w2], create_graph=True)
    hv = torch.cat(hessian_vector_product(grads, [w1, w2], v))
    torch.testing.assert_close(hv, a @ torch.cat(v))


def test_early_stop_bounds_the_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cost is Hessian-vector products: fewer than max_iter once the Rayleigh quotient
    settles (tol), exactly max_iter without (tol = 0), one forward pass either way; and
    each estimate is the exact Rayleigh quotient of the iterate it stopped at."""
    a = torch.diag(torch.tensor([4.0, 1.0, 0.5], dtype=torch.float64))
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    forwards = hvps = 0

    def loss() -> torch.Tensor:
        nonlocal forwards
        forwards += 1
        return 0.5 * w @ a @ w

    hvp = sharpness.hessian_vector_product

    def counting_hvp(*args: Any) -> list[torch.Tensor]:
        nonlocal hvps
        hvps += 1
        return hvp(*args)

    monkeypatch.setattr(sharpness, "hessian_vector_product", counting_hvp)
    # power iteration from the seeded start v0: after k products the estimate is the
    # Rayleigh quotient of A^(k-1) v0
    v0 = torch.randn(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def rayleigh(k: int) -> float:
        v = torch.linalg.matrix_power(a, k - 1) @ v0
        return float(v @ a @ v / (v @ v))

    def run(**kw: Any) -> tuple[float, int, int]:
        nonlocal forwards, hvps
        forwards = hvps = 0
        est = top_hessian_eigenvalue(loss, [w], **kw)
        return est, hvps, forwards

    est, n, f = run(max_iter=20, tol=1e-3)
    assert f == 1  # one forward pass; every product reuses its graph
    assert 2 <= n < 20, n
    assert est == pytest.approx(rayleigh(n), rel=1e-12)
    assert est == pytest.approx(4.0, rel=1e-3)
    # it stopped at the first product whose quotient moved by less than tol (relative)
    moves = [abs(rayleigh(k) - rayleigh(k - 1)) / abs(rayleigh(k)) for k in range(2, n + 1)]
    assert moves[-1] < 1e-3 and all(m >= 1e-3 for m in moves[:-1]), moves

    full, n, f = run(max_iter=20, tol=0.0)
    assert (n, f) == (20, 1)
    assert full == pytest.approx(rayleigh(20), rel=1e-12) and full == pytest.approx(4.0, rel=1e-9)

    one, n, _ = run(max_iter=1)
    assert n == 1 and one == pytest.approx(rayleigh(1), rel=1e-12)
    assert 0.5 <= one <= 4.0  # one Rayleigh quotient: inside the spectrum
    assert one != pytest.approx(4.0, rel=1e-3)  # and not already the answer: the iterations matter


def test_linear_regression_least_squares() -> None:
    gen = torch.Generator().manual_seed(1)
    n, d = 200, 8
    x = torch.randn(n, d, generator=gen) * torch.linspace(0.3, 3.0, d)  # anisotropic features
    y = torch.randn(n, generator=gen)
    model = torch.nn.Linear(d, 1, bias=False)
    loss = lambda: 0.5 * ((model(x).squeeze(1) - y) ** 2).mean()
    h = x.T @ x / n  # Hessian of the mean ½ squared error
    est = top_hessian_eigenvalue(loss, list(model.parameters()))  # defaults: ≤ 20 HVPs
    assert est == pytest.approx(float(torch.linalg.eigvalsh(h)[-1]), rel=0.01)


def test_fixed_subset_is_reproducible() -> None:
    a, b = fixed_subset(1000, 64, seed=3), fixed_subset(1000, 64, seed=3)
    assert torch.equal(a, b) and a.numel() == 64 and a.unique().numel() == 64
    assert bool((a[1:] > a[:-1]).all()) and int(a.max()) < 1000
    assert not torch.equal(a, fixed_subset(1000, 64, seed=4))
    assert fixed_subset(10, 64).numel() == 10


def test_indefinite_hessian_gives_the_top_not_the_largest_magnitude_eigenvalue() -> None:
    """Eigenvalues {-10, 3, 1}: power iteration alone would return -10."""
    import torch

    from trainables.sharpness import top_hessian_eigenvalue

    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    a = q @ torch.diag(torch.tensor([-10.0, 3.0, 1.0], dtype=torch.float64)) @ q.T
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    lam = top_hessian_eigenvalue(lambda: 0.5 * w @ a @ w, [w], max_iter=100, tol=1e-9)
    assert abs(lam - 3.0) < 0.03
