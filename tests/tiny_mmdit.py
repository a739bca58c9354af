"""A tiny random MMDiT in plain torch that follows ComfyUI's protocols, for block-patch tests without ComfyUI.

As in comfy/ldm/modules/diffusionmodules/mmdit.py: joint block i is replaced by
`patches_replace["dit"][("double_block", i)](args, {"original_block": ...})`; a block concatenates its text then
image rows for one joint attention, run through `transformer_options["optimized_attention_override"](func, q, k,
v, ...)` when there is one (ComfyUI's `wrap_attn`); MMDiT-X blocks then run a second attention on the image rows
only; the last block's text stream is pre_only (its text output is None).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _attention(q, k, v, heads, **kwargs):
    b, n, c = q.shape
    q, k, v = (t.reshape(b, -1, heads, c // heads).transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)


def attention(q, k, v, heads, transformer_options=None):
    override = (transformer_options or {}).get("optimized_attention_override")
    if override is not None:
        return override(_attention, q, k, v, heads=heads, transformer_options=transformer_options)
    return _attention(q, k, v, heads)


class TinyJointBlock(nn.Module):
    def __init__(self, width: int, heads: int, pre_only: bool, self_attn: bool):
        super().__init__()
        self.heads, self.pre_only, self.self_attn = heads, pre_only, self_attn
        self.txt_qkv, self.img_qkv = nn.Linear(width, 3 * width), nn.Linear(width, 3 * width)
        self.txt_out, self.img_out = nn.Linear(width, width), nn.Linear(width, width)
        self.img_qkv2 = nn.Linear(width, 3 * width)

    def text_qkv(self, txt, c):
        return self.txt_qkv(torch.tanh(txt + c[:, None])).chunk(3, -1)

    def mix(self, txt, img, c, transformer_options=None, kv_from=None):
        """The block; `kv_from` (a text stream) gives the text keys and values in place of `txt`'s."""
        qt, kt, vt = self.text_qkv(txt, c)
        if kv_from is not None:
            _, kt, vt = self.text_qkv(kv_from, c)
        qi, ki, vi = self.img_qkv(torch.tanh(img + c[:, None])).chunk(3, -1)
        o = attention(torch.cat([qt, qi], 1), torch.cat([kt, ki], 1), torch.cat([vt, vi], 1), self.heads,
                      transformer_options)
        n = txt.shape[1]
        img = img + self.img_out(o[:, n:])
        if self.self_attn:
            img = img + attention(*self.img_qkv2(img).chunk(3, -1), self.heads, transformer_options)
        return None if self.pre_only else txt + self.txt_out(o[:, :n]), img

    def forward(self, txt, img, c, transformer_options=None):
        return self.mix(txt, img, c, transformer_options)


class TinyMMDiT(nn.Module):
    def __init__(self, depth: int = 3, width: int = 8, heads: int = 2, self_attn: tuple[int, ...] = (0,),
                 seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.joint_blocks = nn.ModuleList(TinyJointBlock(width, heads, i == depth - 1, i in self_attn)
                                          for i in range(depth))

    @torch.no_grad()
    def forward(self, txt, img, c, transformer_options=None):
        """The image stream after every block, each block run or replaced as forward_core_with_concat does."""
        opts = transformer_options or {}
        replace = opts.get("patches_replace", {}).get("dit", {})
        for i, block in enumerate(self.joint_blocks):
            if ("double_block", i) in replace:
                def original(args, block=block):
                    t, x = block(args["txt"], args["img"], args["vec"], args["transformer_options"])
                    return {"txt": t, "img": x}
                out = replace[("double_block", i)]({"img": img, "txt": txt, "vec": c, "transformer_options": opts},
                                                   {"original_block": original})
                txt, img = out["txt"], out["img"]
            else:
                txt, img = block(txt, img, c, opts)
        return img


def options(patches: dict[int, object], sigma: float = 0.5, cond_or_uncond=(0, 1), batch: int = 2) -> dict:
    """transformer_options with the given block patches, one sigma and a CFG batch layout."""
    return {"patches_replace": {"dit": {("double_block", i): p for i, p in patches.items()}},
            "sigmas": torch.full((batch,), sigma), "cond_or_uncond": list(cond_or_uncond)}
