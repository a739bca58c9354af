"""The built world sampled here, without ComfyUI: the same files, maths and noise as ComfyUI's SD3 path.

Text encoder -> MMDiT -> `euler` on the `simple` schedule with CFG against the negative prompt -> TAESD3
decoder, each read from the files ComfyUI loads. Given the same prompt and seed it reproduces ComfyUI's
KSampler latent up to float rounding (checked by the host tests), so that a build can be judged without a server.
"""
from __future__ import annotations

import numpy as np
import torch

from ..safefile import load_tensors
from .autoencoder import tensor_to_images
from .build import BuiltWorld, WorldError
from .dit import CONTEXT_KEY, POOLED_KEY, make_transformer, velocity
from .flow import comfy_noise, euler_sample, simple_schedule
from .recipe import SamplingDefaults
from .scene import IMAGE_SIZE
from .taesd import DOWNSCALE, LATENT_CHANNELS, load_stack
from .text import HIDDEN, TextEncoder


def load_transformer(path, recipe):
    """The MMDiT from its ComfyUI file, with the input projections cut back to their 768 non-zero columns."""
    sd = load_tensors(path, error=WorldError)
    for key in (CONTEXT_KEY, POOLED_KEY):
        if sd[key][:, HIDDEN:].abs().max() > 0:
            raise WorldError(f"{path} uses more than CLIP-L's {HIDDEN} input columns in {key}: not a world model")
        sd[key] = sd[key][:, :HIDDEN]
    model = make_transformer(recipe)
    model.load_state_dict(sd)
    return model.eval()


class LocalWorld:
    """The world's three models loaded here."""

    def __init__(self, built: BuiltWorld):
        self.built = built
        self.text = TextEncoder.load(built.path("text_encoder"))
        self.dit = load_transformer(built.path("diffusion_model"), built.recipe.dit)
        self.decoder = load_stack(load_tensors(built.path("vae_decoder"), error=WorldError), decoder=True)

    @torch.no_grad()
    def sample_latents(self, prompts: list[str], seeds: list[int], sampling: SamplingDefaults | None = None,
                       negative: str = "") -> torch.Tensor:
        """Latents [N, 16, 8, 8] (the model's space) of each (prompt, seed), as ComfyUI's KSampler makes them."""
        sampling = sampling or self.built.recipe.sampling
        if (sampling.sampler, sampling.scheduler) != ("euler", "simple"):
            raise WorldError(f"only euler / simple is reproduced here, not {sampling.sampler} / {sampling.scheduler}")
        hidden, pooled = self.text.encode(list(prompts) + [negative])
        neg_h, neg_p = hidden[-1:].expand(len(prompts), -1, -1), pooled[-1:].expand(len(prompts), -1)
        size = IMAGE_SIZE // DOWNSCALE
        noise = torch.cat([comfy_noise(s, (1, LATENT_CHANNELS, size, size)) for s in seeds])
        return euler_sample(lambda x, s: velocity(self.dit, x, s, hidden[:-1], pooled[:-1]),
                            lambda x, s: velocity(self.dit, x, s, neg_h, neg_p),
                            noise, simple_schedule(sampling.steps, self.built.recipe.dit.shift), sampling.cfg)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """RGB uint8 images [N, 64, 64, 3], as VAEDecode + SaveImage give them."""
        return tensor_to_images(self.decoder(latents).clamp(0, 1))

    def sample(self, prompts: list[str], seeds: list[int], sampling: SamplingDefaults | None = None) -> np.ndarray:
        return self.decode(self.sample_latents(prompts, seeds, sampling))
