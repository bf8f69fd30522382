"""Muon for the transformer's matrices, AdamW for the rest, as one optimizer.

Muon (Jordan et al., 2024) replaces each hidden matrix's update by the nearest semi-orthogonal
matrix to its Nesterov momentum, found by a few Newton-Schulz iterations. Every direction of
the update then moves the same amount, where Adam's update is dominated by a few; on a run that
sees a few million tokens that learns more per token. Embeddings (tied to the output head) and
norm gains are not hidden matrices and stay on AdamW.

The orthogonalised update is scaled to the RMS AdamW's updates have (0.2 * sqrt(max(rows,
cols)), Liu et al., 2025), so one learning rate and schedule serve both kinds of parameter.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # quintic iteration tuned to converge fast near zero
NS_STEPS = 5
ADAMW_MATCHING_RMS = 0.2


def orthogonalize(g: torch.Tensor, steps: int = NS_STEPS) -> torch.Tensor:
    """An approximation of U V^T for g = U S V^T, by Newton-Schulz iteration.

    bfloat16 on accelerators, where it is fast and accurate enough; float32 on CPU, where
    bfloat16 matrix products are some twenty times slower than float32 ones.
    """
    a, b, c = NS_COEFFICIENTS
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    tall = x.size(0) > x.size(1)
    if tall:  # iterate on the smaller Gram matrix
        x = x.T
    x = x / (x.norm() + 1e-7)  # singular values into [0, 1], where the iteration converges
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Groups with muon=True: orthogonalised momentum; the others: AdamW. Both decay weights decoupled."""

    def __init__(self, groups: Iterable[dict[str, Any]], lr: float, momentum: float = 0.95,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> None:
        super().__init__(groups, dict(lr=lr, momentum=momentum, betas=betas, eps=eps, weight_decay=0.0, muon=False))
        for group in self.param_groups:
            if group["muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon groups hold matrices only")

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if wd:
                    p.mul_(1 - lr * wd)
                if group["muon"]:
                    self._muon_update(p, group)
                else:
                    self._adamw_update(p, group)

    def _muon_update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if not state:
            state["momentum"] = torch.zeros_like(p)
        buf = state["momentum"]
        buf.lerp_(p.grad, 1 - group["momentum"])
        nesterov = p.grad.lerp(buf, group["momentum"])
        p.add_(orthogonalize(nesterov), alpha=-group["lr"] * ADAMW_MATCHING_RMS * math.sqrt(max(p.shape)))

    def _adamw_update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if not state:
            state["step"] = 0  # a Python number: reading a tensor's would sync with the GPU per parameter
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        (beta1, beta2), g = group["betas"], p.grad
        state["step"] += 1
        t = state["step"]
        state["exp_avg"].lerp_(g, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (state["exp_avg_sq"] / (1 - beta2**t)).sqrt_().add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - beta1**t))
