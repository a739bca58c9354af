"""Stand-in `comfy.sample`: KSampler's noise and sampling calls, run by the driver of `comfy_stubs.sampling` (Euler
with CFG whatever the sampler's name) on the CONDITIONING lists ComfyUI passes."""
from __future__ import annotations

import torch


def prepare_noise(latent_image, seed, noise_inds=None):
    return torch.randn(latent_image.size(), dtype=latent_image.dtype, generator=torch.manual_seed(seed))


def fix_empty_latent_channels(model, latent_image):
    return latent_image


def sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise=1.0,
           disable_noise=False, start_step=None, last_step=None, force_full_denoise=False, noise_mask=None,
           sigmas=None, callback=None, disable_pbar=False, seed=None):
    from comfy_stubs.sampling import Cond
    from comfy_stubs.sampling import sample as drive

    def cond(c):
        (context, extra), = c
        return Cond(context, extra["pooled_output"])
    return drive(model, cond(positive), cond(negative), steps=steps, cfg=cfg, noise=noise)
