"""Loss terms, one function each (StyleGAN2: non-saturating logistic loss, lazy R1 on reals)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(G(z))) (Goodfellow et al. 2014, non-saturating)."""
    return F.softplus(-fake_logits).mean()


def d_fake(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log(1 - sigmoid(D(G(z))))."""
    return F.softplus(fake_logits).mean()


def d_real(real_logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(x))."""
    return F.softplus(-real_logits).mean()


def r1_grads(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """grad_x sum D(x), [B, C, H, W], differentiable (R1 backpropagates through it). real_images must require grad."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True, only_inputs=True)
    return grad


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """||grad_x D(x)||^2 per sample, [B] (Mescheder et al. 2018). real_images must require grad."""
    return r1_grads(real_logits, real_images).square().sum(dim=[1, 2, 3])


def r1_loss(penalty: torch.Tensor, gamma: float, interval: int) -> torch.Tensor:
    """gamma / 2 * E[||grad||^2], scaled by the lazy-regularisation interval (StyleGAN2 Sec. 3.1)."""
    return penalty.mean() * (gamma / 2) * interval
