from __future__ import annotations

import pytest
import torch

from codecomplete.train.muon import Muon, orthogonalize


@pytest.mark.parametrize("shape", [(96, 32), (32, 96), (48, 48)])
def test_orthogonalize_evens_out_the_singular_values(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(shape[0], min(shape)))
    v, _ = torch.linalg.qr(torch.randn(shape[1], min(shape)))
    spread = torch.logspace(0, -2, min(shape))  # a gradient dominated by a few directions
    g = u @ torch.diag(spread) @ v.T
    out = orthogonalize(g)
    assert out.shape == g.shape and out.dtype == g.dtype
    s = torch.linalg.svdvals(out)
    assert s.max() < 1.3 and s.min() > 0.5  # Newton-Schulz lands near 1, not exactly on it
    # the directions are g's own: out ~ u v^T
    assert torch.nn.functional.cosine_similarity((u @ v.T).flatten(), out.flatten(), dim=0) > 0.9


def test_matrices_take_orthogonal_steps_and_the_rest_adamw_steps() -> None:
    torch.manual_seed(0)
    matrix, gain = torch.nn.Parameter(torch.randn(64, 16)), torch.nn.Parameter(torch.ones(16))
    opt = Muon([{"params": [matrix], "muon": True}, {"params": [gain]}], lr=0.01)
    before_m, before_g = matrix.detach().clone(), gain.detach().clone()
    matrix.grad = torch.randn(64, 1) @ torch.randn(1, 16)  # rank one
    gain.grad = torch.full((16,), 5.0)
    opt.step()
    step = before_m - matrix.detach()
    # 0.2 * sqrt(64) * lr times an orthogonalised matrix: rank one here, its singular value near 1
    assert torch.linalg.matrix_rank(step, atol=1e-5) == 1
    assert torch.linalg.matrix_norm(step) == pytest.approx(0.01 * 0.2 * 8, rel=0.35)
    # AdamW's first step is lr * sign(grad)
    torch.testing.assert_close(before_g - gain.detach(), torch.full((16,), 0.01), rtol=1e-4, atol=1e-6)


def test_muon_groups_hold_matrices_only() -> None:
    with pytest.raises(ValueError, match="matrices"):
        Muon([{"params": [torch.nn.Parameter(torch.ones(3))], "muon": True}], lr=0.1)
