"""Rectified-flow maths exactly as ComfyUI samples an SD3 model (pure functions on tensors).

ComfyUI treats SD3 as a FLOW model with `ModelSamplingDiscreteFlow(shift=3.0)` and the CONST parametrisation:
a noisy latent is x = sigma * noise + (1 - sigma) * x0, the model is called with timestep = 1000 * sigma and
predicts the velocity v = noise - x0 (so x0 = x - sigma * v). Its sigma table holds shift(k / 1000) for
k = 1..1000, shift(t) = s * t / (1 + (s - 1) * t); the `simple` scheduler walks that table evenly; `euler`
steps x along (x - x0) / sigma; classifier-free guidance mixes the two x0 predictions.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

SHIFT = 3.0
"""SD3's default sampling shift in ComfyUI (`supported_models.SD3.sampling_settings`)."""
TIMESTEPS = 1000

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""velocity(x [B, C, H, W], sigma [B]) -> v [B, C, H, W]"""


def shift_sigma(t: torch.Tensor | float, shift: float = SHIFT) -> torch.Tensor:
    """The shifted noise level of a uniform time t in [0, 1]."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return shift * t / (1 + (shift - 1) * t)


def training_sigmas(n: int, generator: torch.Generator, shift: float = SHIFT) -> torch.Tensor:
    """n noise levels for training: logit-normal times (SD3's choice), shifted like the sampler's table."""
    t = torch.sigmoid(torch.randn(n, generator=generator, dtype=torch.float64))
    return shift_sigma(t, shift).float()


def noisy(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_sigma = sigma * noise + (1 - sigma) * x0, sigma broadcast over all but the first dimension."""
    s = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
    return s * noise + (1 - s) * x0


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What the model learns to predict: v = noise - x0."""
    return noise - x0


def simple_schedule(steps: int, shift: float = SHIFT) -> torch.Tensor:
    """ComfyUI's `simple` scheduler on SD3's sigma table: steps + 1 sigmas from 1 down to 0 (float32)."""
    table = shift_sigma(torch.arange(1, TIMESTEPS + 1, dtype=torch.float64) / TIMESTEPS, shift).float()
    stride = TIMESTEPS / steps
    return torch.tensor([float(table[-(1 + int(i * stride))]) for i in range(steps)] + [0.0])


def comfy_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The initial noise ComfyUI's KSampler draws for `seed` (CPU generator seeded with it, float32)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def euler_sample(cond: Velocity, uncond: Velocity | None, noise: torch.Tensor, sigmas: torch.Tensor,
                 cfg: float = 1.0) -> torch.Tensor:
    """ComfyUI's `euler` sampler with CFG on x0 predictions, from pure noise (denoise 1): the final latent."""
    x = noise * sigmas[0]  # the empty latent's share, (1 - sigma_max) * x0, vanishes at sigma_max = 1
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        sigma = torch.full((x.shape[0],), float(s))
        x0 = x - float(s) * cond(x, sigma)
        if uncond is not None and cfg != 1.0:
            x0_u = x - float(s) * uncond(x, sigma)
            x0 = x0_u + (x0 - x0_u) * cfg
        x = x + (x - x0) / float(s) * (float(s_next) - float(s))
    return x
