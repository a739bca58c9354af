"""The world's autoencoder: the thumbnail encoder's statistics and the training of its decoder.

The decoder learns to draw the image back from its thumbnail latent with noise added (so that it forgives a
diffusion model's small errors), on random crops aligned to the latent grid (the stack is convolutional, so
crops teach it the same map at a fraction of the cost), with the loss weighted towards the object's pixels
(the object covers a few percent of an image, and its edges carry the shape).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .taesd import DOWNSCALE, Stack, StackShape, full_state_dict, thumbnail_encoder_state_dict, thumbnail_latent

Progress = Callable[[int, int, float], None]
"""progress(step, total, loss)"""


@dataclass(frozen=True)
class AutoencoderRecipe:
    """How the decoder is shaped and trained."""

    decoder: StackShape = field(default_factory=StackShape)
    steps: int = 3000
    batch: int = 32
    lr: float = 2e-3
    latent_noise: float = 0.1
    """Std of the Gaussian noise added to the (unit-scale) latent before decoding, in training."""
    crop: int = 32
    """Train on crops of this many pixels, aligned to the 8-pixel latent grid (0: whole images)."""
    object_weight: float = 10.0
    """Extra loss weight of pixels that differ from the background."""
    seed: int = 0


@dataclass
class Autoencoder:
    """The thumbnail encoder (per-colour mean and std of the training thumbnails) and the trained decoder."""

    mean: torch.Tensor
    std: torch.Tensor
    decoder: Stack

    def encode(self, image_bchw: torch.Tensor) -> torch.Tensor:
        return thumbnail_latent(image_bchw, self.mean, self.std)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1], clamped as ComfyUI's VAEDecode does."""
        return self.decoder(latent).clamp(0, 1)

    def state_dicts(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(encoder, decoder) in ComfyUI's TAESD3 key layout."""
        return thumbnail_encoder_state_dict(self.mean, self.std), full_state_dict(self.decoder)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0)


def tensor_to_images(x_bchw: torch.Tensor) -> np.ndarray:
    """float [N, 3, H, W] in [0, 1] -> uint8 [N, H, W, 3], rounded as ComfyUI's SaveImage does."""
    return (x_bchw.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)


def thumbnail_stats(x_bchw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-colour mean and std [3] of the images' 4 x 4-averaged thumbnails."""
    thumb = torch.nn.functional.avg_pool2d(x_bchw, 4)
    return thumb.mean((0, 2, 3)), thumb.std((0, 2, 3))


def random_crops(x_bchw: torch.Tensor, z_bchw: torch.Tensor, size: int,
                 g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One crop of `size` pixels per image and the matching latent crop, corners on the latent grid."""
    if not size or size >= x_bchw.shape[-1]:
        return x_bchw, z_bchw
    corners = torch.randint((x_bchw.shape[-1] - size) // DOWNSCALE + 1, (len(x_bchw), 2), generator=g)
    n = size // DOWNSCALE
    xs = [img[:, y * DOWNSCALE:(y + n) * DOWNSCALE, x * DOWNSCALE:(x + n) * DOWNSCALE]
          for img, (y, x) in zip(x_bchw, corners.tolist())]
    zs = [lat[:, y:y + n, x:x + n] for lat, (y, x) in zip(z_bchw, corners.tolist())]
    return torch.stack(xs), torch.stack(zs)


def pixel_weights(x_bchw: torch.Tensor, extra: float) -> torch.Tensor:
    """[B, 1, H, W] loss weights: 1, plus `extra` times each pixel's RGB distance from the border median."""
    border = torch.cat([x_bchw[..., 0, :], x_bchw[..., -1, :], x_bchw[..., :, 0], x_bchw[..., :, -1]], dim=-1)
    bg = border.median(dim=-1).values[..., None, None]
    return 1 + extra * (x_bchw - bg).norm(dim=1, keepdim=True).clamp(max=1)


def cosine_lr(step: int, total: int, base: float, warmup: int = 20) -> float:
    """Linear warm-up, then cosine decay to 5% of `base`."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def train_autoencoder(images: np.ndarray, recipe: AutoencoderRecipe, progress: Progress | None = None) -> Autoencoder:
    """The thumbnail encoder fitted to `images` (uint8 [N, H, W, 3]) and a decoder trained on them;
    deterministic given the recipe's seed."""
    torch.manual_seed(recipe.seed)
    g = torch.Generator().manual_seed(recipe.seed)
    data = images_to_tensor(images)
    mean, std = thumbnail_stats(data)
    latents = thumbnail_latent(data, mean, std)
    decoder = Stack(recipe.decoder, decoder=True)
    opt = torch.optim.Adam(decoder.parameters(), lr=recipe.lr)
    for step in range(recipe.steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, recipe.steps, recipe.lr)
        idx = torch.randint(len(data), (recipe.batch,), generator=g)
        x, z = random_crops(data[idx], latents[idx], recipe.crop, g)
        noisy = z + recipe.latent_noise * torch.randn(z.shape, generator=g)
        loss = ((decoder(noisy) - x).pow(2) * pixel_weights(x, recipe.object_weight)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        opt.step()
        if progress is not None:
            progress(step + 1, recipe.steps, loss.item())
    return Autoencoder(mean, std, decoder.eval())
