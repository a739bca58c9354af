"""The model side of ComfyUI, in miniature: a ModelPatcher, a tiny MMDiT and a sampler that calls it as ComfyUI does.

- `FakeModelPatcher`: clone() deep-copies model_options (as ComfyUI's does, hooks and wrappers included),
  set_model_patch_replace() copies the dicts on the way as ComfyUI's does, get_model_object() reads the model.
- `TinyMMDiT`: joint blocks over the text and image tokens together; its forward calls a block's
  ("double_block", i) replace patch with {"img", "txt", "vec", "transformer_options"} and {"original_block"},
  exactly as ComfyUI's `forward_core_with_concat`; its last block is pre_only (no text output).
- `sample`: Euler steps with CFG. Each step calls `calc_cond_batch`, which runs the positive and negative
  prompts as one batch ("batched"; conditionings of different lengths repeat-padded to a common multiple when
  that repeats the shorter at most 4 times, else split) or as separate calls ("split", positive first;
  "split-negative-first", the order ComfyUI uses when it splits for memory), each call through the model's
  APPLY_MODEL wrappers with transformer_options {sigmas, cond_or_uncond, uuids, patches_replace, wrappers}.
  `guidance_blocks` adds a SkipLayerGuidance-like pass: the positive prompt again at the same sigma with
  those blocks skipped.
"""
from __future__ import annotations

import copy
import math
import uuid
from dataclasses import dataclass, field
from typing import Literal

import torch
from comfy.patcher_extension import Chain, WrappersMP, get_all_wrappers
from torch import nn

CLIP_CHANNELS = 2048
WIDE = CLIP_CHANNELS + 16  # wider than SD3's CLIP channels, so that CLIP rows (zero beyond) can be told from T5 rows


def conditioning(n_clip: int, n_t5: int, seed: int, width: int = WIDE) -> torch.Tensor:
    """An SD3-like conditioning [1, n_clip + n_t5, width]: CLIP rows zero beyond channel 2048, T5 rows dense."""
    x = torch.randn(1, n_clip + n_t5, width, generator=torch.Generator().manual_seed(seed))
    x[:, :n_clip, CLIP_CHANNELS:] = 0
    return x


def _attention(q, k, v, **kwargs):
    return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), -1) @ v


class JointBlock(nn.Module):
    """Attention over the text and image tokens together, then an MLP; modulated by the conditioning vector."""

    def __init__(self, hidden: int, pre_only: bool = False):
        super().__init__()
        self.pre_only = pre_only
        self.qkv, self.mod = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden))

    def forward(self, txt, img, c, transformer_options=None, **kwargs):
        x = torch.cat([txt, img], 1)
        q, k, v = self.qkv(x + self.mod(c)[:, None]).chunk(3, -1)
        override = (transformer_options or {}).get("optimized_attention_override")  # as ComfyUI's wrap_attn
        x = x + (_attention(q, k, v) if override is None else override(_attention, q, k, v, heads=1))
        x = x + self.mlp(x)
        return (None if self.pre_only else x[:, :txt.shape[1]]), x[:, txt.shape[1]:]


class Embedder(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(channels, hidden)  # weight [hidden, channels]: the hidden size, as SD3's patch embed


class TinyMMDiT(nn.Module):
    def __init__(self, depth: int = 3, hidden: int = 32, channels: int = 4, context: int = WIDE, pooled: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.x_embedder = Embedder(channels, hidden)
        self.context_embedder = nn.Linear(context, hidden)
        self.y_embedder, self.t_embedder = nn.Linear(pooled, hidden), nn.Linear(1, hidden)
        self.joint_blocks = nn.ModuleList(JointBlock(hidden, pre_only=i == depth - 1) for i in range(depth))
        self.final_layer = nn.Linear(hidden, channels)

    def forward(self, x, timesteps, context=None, y=None, control=None, transformer_options={}, **kwargs):
        b, ch, h, w = x.shape
        img = self.x_embedder.proj(x.flatten(2).transpose(1, 2))
        txt = self.context_embedder(context)
        c_mod = self.t_embedder(timesteps[:, None].to(img.dtype)) + self.y_embedder(y)
        blocks_replace = transformer_options.get("patches_replace", {}).get("dit", {})
        for i, block in enumerate(self.joint_blocks):
            if ("double_block", i) in blocks_replace:
                def block_wrap(args, block=block):
                    out = {}
                    out["txt"], out["img"] = block(args["txt"], args["img"], c=args["vec"],
                                                   transformer_options=args["transformer_options"])
                    return out
                out = blocks_replace[("double_block", i)](
                    {"img": img, "txt": txt, "vec": c_mod, "transformer_options": transformer_options},
                    {"original_block": block_wrap})
                txt, img = out["txt"], out["img"]
            else:
                txt, img = block(txt, img, c=c_mod, transformer_options=transformer_options)
        return self.final_layer(img).transpose(1, 2).reshape(b, ch, h, w)


class ModelSampling:
    """Flow matching with shift 1: the sigma of a schedule percentage, as ComfyUI's percent_to_sigma."""

    def percent_to_sigma(self, percent: float) -> float:
        return 1.0 if percent <= 0.0 else 0.0 if percent >= 1.0 else 1.0 - percent


class BaseModel:
    """ComfyUI's BaseModel in miniature: apply_model runs the APPLY_MODEL wrappers around the diffusion model."""

    def __init__(self, diffusion_model: nn.Module):
        self.diffusion_model, self.model_sampling = diffusion_model, ModelSampling()
        self.calls: list[dict] = []

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        wrappers = get_all_wrappers(WrappersMP.APPLY_MODEL, transformer_options)
        return Chain(self._apply_model, wrappers).execute(x, t, c_concat, c_crossattn, control, transformer_options,
                                                          **kwargs)

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        self.calls.append({"cond_or_uncond": list(transformer_options["cond_or_uncond"]), "sigma": float(t[0]),
                           "context_rows": c_crossattn.shape[1]})
        out = self.diffusion_model(x, t, context=c_crossattn, control=control,
                                   transformer_options=transformer_options, **kwargs)
        return x - t.view(-1, 1, 1, 1) * out


class FakeModelPatcher:
    def __init__(self, model: BaseModel):
        self.model = model
        self.model_options: dict = {"transformer_options": {}}

    def clone(self) -> FakeModelPatcher:
        n = FakeModelPatcher(self.model)
        n.model_options = copy.deepcopy(self.model_options)
        return n

    def set_model_patch_replace(self, patch, name, block_name, number, transformer_index=None):
        to = dict(self.model_options["transformer_options"])
        to["patches_replace"] = dict(to.get("patches_replace", {}))
        to["patches_replace"][name] = dict(to["patches_replace"].get(name, {}))
        to["patches_replace"][name][(block_name, number)] = patch
        self.model_options["transformer_options"] = to

    def get_model_object(self, name: str):
        return getattr(self.model, name)


def tiny_model(depth: int = 3) -> FakeModelPatcher:
    return FakeModelPatcher(BaseModel(TinyMMDiT(depth)))


@dataclass
class Cond:
    """One conditioning entry as the sampler holds it: context [1, L, C], pooled [1, P] and its uuid."""

    context: torch.Tensor
    pooled: torch.Tensor = field(default_factory=lambda: torch.zeros(1, 8))
    uuid: uuid.UUID = field(default_factory=uuid.uuid4)


Passes = Literal["batched", "split", "split-negative-first"]


def _can_pad(lengths: list[int]) -> bool:
    return math.lcm(*lengths) // min(lengths) <= 4


def calc_cond_batch(model: BaseModel, conds: list[Cond | None], x: torch.Tensor, sigma: float, model_options: dict,
                    passes: Passes) -> list[torch.Tensor]:
    """Each non-empty entry of `conds` (0 positive, 1 negative) through the model: batched, or one call each."""
    to_run = [(i, c) for i, c in enumerate(conds) if c is not None]
    if passes == "batched" and _can_pad([c.context.shape[1] for _, c in to_run]):
        groups = [to_run[::-1]]  # ComfyUI batches the chunks last first: cond_or_uncond [1, 0]
    else:
        groups = [[r] for r in (reversed(to_run) if passes == "split-negative-first" else to_run)]
    out: list[torch.Tensor | None] = [None] * len(conds)
    for group in groups:
        length = math.lcm(*(c.context.shape[1] for _, c in group))
        context = torch.cat([c.context.repeat(1, length // c.context.shape[1], 1) for _, c in group])
        n = len(group)
        opts = copy.copy(model_options["transformer_options"])
        opts.update(cond_or_uncond=[i for i, _ in group], uuids=[c.uuid for _, c in group],
                    sigmas=torch.full((n * x.shape[0],), sigma))
        context = context.repeat_interleave(x.shape[0], 0)
        pooled = torch.cat([c.pooled for _, c in group]).repeat_interleave(x.shape[0], 0)
        result = model.apply_model(torch.cat([x] * n), torch.full((n * x.shape[0],), sigma), c_crossattn=context,
                                   transformer_options=opts, y=pooled)
        for (i, _), o in zip(group, result.chunk(n)):
            out[i] = o
    return out


def skip(args: dict, extra: dict) -> dict:
    """A skipped block, as SkipLayerGuidance patches it: its input passes through."""
    return args


def _nested_copy(d: dict) -> dict:
    """The dicts copied, everything else shared: how ComfyUI copies model_options for a sampling run."""
    return {k: _nested_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def sample(patcher: FakeModelPatcher, positive: Cond, negative: Cond | None, steps: int = 3, passes: Passes = "batched",
           guidance_blocks: tuple[int, ...] = (), batch: int = 1, cfg: float = 2.0, seed: int = 0,
           noise: torch.Tensor | None = None) -> torch.Tensor:
    """Euler sampling with CFG from sigma 1 to 0, from `noise` or [batch, 4, 4, 4] drawn with `seed`."""
    model = patcher.model
    model_options = _nested_copy(patcher.model_options)
    x = torch.randn(batch, 4, 4, 4, generator=torch.Generator().manual_seed(seed)) if noise is None else noise
    sigmas = torch.linspace(1.0, 0.0, steps + 1).tolist()
    with torch.no_grad():
        for sigma, next_sigma in zip(sigmas[:-1], sigmas[1:]):
            cond, uncond = calc_cond_batch(model, [positive, negative], x, sigma, model_options, passes)
            denoised = cond if uncond is None else uncond + cfg * (cond - uncond)
            if guidance_blocks:
                slg = _nested_copy(model_options)
                for i in guidance_blocks:
                    slg["transformer_options"].setdefault("patches_replace", {}).setdefault("dit", {})[
                        ("double_block", i)] = skip
                (skipped,) = calc_cond_batch(model, [positive], x, sigma, slg, passes)
                denoised = denoised + (cond - skipped)
            x = x + (x - denoised) / sigma * (next_sigma - sigma)
    return x
