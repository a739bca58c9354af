"""The world's diffusion model: a small SD3-architecture MMDiT (diffusers' SD3Transformer2DModel) and its training.

ComfyUI detects an MMDiT's depth from its hidden size (hidden = 64 * depth, heads = depth, head width 64),
reads diffusers' key layout through its own converter, and with `dual_attention_layers` the extra image
self-attention of SD3.5 Medium's MMDiT-X blocks. The world's conditioning is non-zero only in CLIP-L's 768
of SD3's 4096 context and 2048 pooled widths, so the model trains with 768-wide input projections and is
written with those projections zero-padded to the full widths: the same function on every input ComfyUI
gives it, at a fifth of the training cost of the context projection.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .autoencoder import cosine_lr
from .flow import SHIFT, noisy, training_sigmas, velocity_target
from .taesd import LATENT_CHANNELS
from .text import CONTEXT_WIDTH, HIDDEN, POOLED_WIDTH

CONTEXT_KEY = "context_embedder.weight"
POOLED_KEY = "time_text_embed.text_embedder.linear_1.weight"
"""diffusers' names of the two input projections that are padded from 768 to SD3's widths."""
Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class DiTRecipe:
    """The MMDiT's shape and its rectified-flow training."""

    depth: int = 2
    """Joint blocks; ComfyUI requires hidden = 64 * depth (and depth heads of 64)."""
    dual_attention_layers: tuple[int, ...] = (0,)
    """Blocks with SD3.5 Medium's extra image self-attention (MMDiT-X); () for the SD3 layout."""
    qk_norm: bool = True
    """RMS-normalise queries and keys, as SD3.5 does."""
    steps: int = 2500
    batch: int = 64
    lr: float = 2e-3
    ema: float = 0.998
    """Decay of the weight average that is saved (0: save the last weights)."""
    cond_dropout: float = 0.1
    """Share of training samples conditioned on the empty prompt instead, so that CFG has an unconditional."""
    shift: float = SHIFT
    seed: int = 0

    def __post_init__(self) -> None:
        if self.depth < 1 or any(not 0 <= i < self.depth for i in self.dual_attention_layers):
            raise ValueError(f"depth must be >= 1 and dual_attention_layers within it, got {self.depth}, "
                             f"{self.dual_attention_layers}")


def make_transformer(recipe: DiTRecipe, latent_size: int = 8):
    """A freshly initialised MMDiT with 768-wide context and pooled inputs (see `comfy_state_dict`)."""
    from diffusers import SD3Transformer2DModel
    torch.manual_seed(recipe.seed)
    return SD3Transformer2DModel(
        sample_size=latent_size, patch_size=2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
        num_layers=recipe.depth, attention_head_dim=64, num_attention_heads=recipe.depth,
        joint_attention_dim=HIDDEN, caption_projection_dim=64 * recipe.depth, pooled_projection_dim=HIDDEN,
        pos_embed_max_size=16, dual_attention_layers=tuple(recipe.dual_attention_layers),
        qk_norm="rms_norm" if recipe.qk_norm else None)


def comfy_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's weights with its input projections zero-padded to SD3's 4096 context and 2048 pooled widths."""
    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    for key, width in ((CONTEXT_KEY, CONTEXT_WIDTH), (POOLED_KEY, POOLED_WIDTH)):
        sd[key] = torch.nn.functional.pad(sd[key], (0, width - sd[key].shape[1]))
    return sd


def velocity(model, x: torch.Tensor, sigma: torch.Tensor, hidden: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """The model's velocity prediction at noise level sigma (timestep 1000 * sigma, as ComfyUI calls it)."""
    return model(hidden_states=x, encoder_hidden_states=hidden, pooled_projections=pooled,
                 timestep=sigma * 1000).sample


def train_dit(latents: torch.Tensor, labels: torch.Tensor, hidden: torch.Tensor, pooled: torch.Tensor,
              empty: tuple[torch.Tensor, torch.Tensor], recipe: DiTRecipe, progress: Progress | None = None):
    """The MMDiT trained by rectified flow on latents [N, 16, 8, 8] whose prompt is `labels` [N] (rows of
    `hidden` [P, 77, 768] and `pooled` [P, 768]); `empty` is the empty prompt's (hidden, pooled)."""
    g = torch.Generator().manual_seed(recipe.seed)
    model = make_transformer(recipe, latents.shape[-1]).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False) if recipe.ema else None
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    for step in range(recipe.steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, recipe.steps, recipe.lr, warmup=100)
        idx = torch.randint(len(latents), (recipe.batch,), generator=g)
        x0, h, p = latents[idx], hidden[labels[idx]], pooled[labels[idx]]
        drop = torch.rand(recipe.batch, generator=g) < recipe.cond_dropout
        h = torch.where(drop[:, None, None], empty[0], h)
        p = torch.where(drop[:, None], empty[1], p)
        noise = torch.randn(x0.shape, generator=g)
        sigma = training_sigmas(recipe.batch, g, recipe.shift)
        loss = (velocity(model, noisy(x0, noise, sigma), sigma, h, p) - velocity_target(x0, noise)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if ema is not None:
            decay = min(recipe.ema, (1 + step) / (10 + step))  # a short average early on
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(pm, 1 - decay)
        if progress is not None:
            progress(step + 1, recipe.steps, loss.item())
    return (ema if ema is not None else model).eval()
