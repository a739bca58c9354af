"""Tiny random-weight models that a real ComfyUI loads through its own SD3 path, built by the tests themselves.

- An MMDiT in ComfyUI's SD3 key layout (hidden = 64 * depth, as ComfyUI infers it), optionally with the
  SD3.5-medium MMDiT-X self-attention blocks; the last block's text stream is pre_only, as in SD3.
- A CLIP-L text encoder (transformers' CLIPTextModel, random weights) that `CLIPLoader` loads as type
  `sd3`: its conditioning is [1, 77, 4096] and its pooled output [1, 2048], from ComfyUI's own code.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file


def mmdit_shapes(depth: int, ctx: int, adm: int, pos: int = 16, x_self_attn: tuple[int, ...] = (),
                 channels: int = 16, patch: int = 2) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an SD3 MMDiT state dict as ComfyUI names it (comfy/ldm/modules/diffusionmodules/mmdit.py)."""
    H = 64 * depth
    s: dict[str, tuple[int, ...]] = {
        "pos_embed": (1, pos * pos, H),
        "x_embedder.proj.weight": (H, channels, patch, patch), "x_embedder.proj.bias": (H,),
        "t_embedder.mlp.0.weight": (H, 256), "t_embedder.mlp.0.bias": (H,),
        "t_embedder.mlp.2.weight": (H, H), "t_embedder.mlp.2.bias": (H,),
        "y_embedder.mlp.0.weight": (H, adm), "y_embedder.mlp.0.bias": (H,),
        "y_embedder.mlp.2.weight": (H, H), "y_embedder.mlp.2.bias": (H,),
        "context_embedder.weight": (H, ctx), "context_embedder.bias": (H,),
        "final_layer.linear.weight": (patch * patch * channels, H),
        "final_layer.linear.bias": (patch * patch * channels,),
        "final_layer.adaLN_modulation.1.weight": (2 * H, H), "final_layer.adaLN_modulation.1.bias": (2 * H,),
    }

    def linear(name: str, n_out: int, n_in: int) -> None:
        s[name + ".weight"], s[name + ".bias"] = (n_out, n_in), (n_out,)

    def attention(prefix: str, qkv_only: bool = False) -> None:
        linear(prefix + "qkv", 3 * H, H)
        s[prefix + "ln_q.weight"] = s[prefix + "ln_k.weight"] = (64,)
        if not qkv_only:
            linear(prefix + "proj", H, H)

    for i in range(depth):
        for stream in ("context_block", "x_block"):
            prefix = f"joint_blocks.{i}.{stream}."
            pre_only = stream == "context_block" and i == depth - 1
            attention(prefix + "attn.", qkv_only=pre_only)
            if not pre_only:
                linear(prefix + "mlp.fc1", 4 * H, H)
                linear(prefix + "mlp.fc2", H, 4 * H)
            chunks = 2 if pre_only else 6
            if stream == "x_block" and i in x_self_attn:
                attention(prefix + "attn2.")
                chunks = 9
            linear(prefix + "adaLN_modulation.1", chunks * H, H)
    return s


def random_mmdit(path: Path, depth: int = 2, ctx: int = 64, adm: int = 32, x_self_attn: tuple[int, ...] = (),
                 pos: int = 16, seed: int = 0) -> Path:
    """A random SD3 MMDiT file for `UNETLoader` (context `ctx` wide, pooled `adm`); norms at one, biases zero."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in mmdit_shapes(depth, ctx, adm, pos, x_self_attn).items():
        if key.endswith(("ln_q.weight", "ln_k.weight")):
            sd[key] = torch.ones(shape)
        elif key.endswith(".bias"):
            sd[key] = torch.zeros(shape)
        else:
            sd[key] = 0.02 * torch.randn(shape, generator=g)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path


def random_clip_l(path: Path, seed: int = 0) -> Path:
    """A random-weight CLIP-L text encoder under `text_model.` keys (fp16), for `CLIPLoader` type `sd3`."""
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(seed)
    model = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                         num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu"))
    sd = {k if k.startswith("text_model.") else f"text_model.{k}": v.half().contiguous()
          for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path
