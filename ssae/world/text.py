"""The world's text encoder: a random-weight CLIP-L that ComfyUI loads as SD3's CLIP-L, and the same encoding here.

The file holds a CLIP-L text model (12 layers, 768 wide, 77 positions) under `text_model.` keys in fp16
(and the unused `text_projection.weight` ComfyUI expects of a CLIP-L),
with weights drawn from a seeded generator (not from any library's initialiser, so that the file depends on
the seed alone). ComfyUI's `CLIPLoader` (type `sd3`) loads it as the CLIP-L of an SD3 text encoder without
CLIP-G and T5, and `CLIPTextEncode` then gives, for a prompt of at most 75 tokens:

* conditioning [1, 77, 4096]: the output of layer 11 of 12 (the penultimate, no final layer norm) over the
  77 tokens `<start> prompt <end> <end>...`, zero-padded from 768 to 4096 (the CLIP-G and T5 slots);
* pooled [1, 2048]: the final-layer-normed last layer at the first `<end>` token, zero-padded from 768.

It runs in float32 on the fp16 weights (ComfyUI stores text encoders in fp16 on the CPU and computes in
float32). `TextEncoder.encode` reproduces both here; the diffusion model trains on them.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import SSAEError
from ..safefile import atomic_save, load_tensors

HIDDEN, LAYERS, HEADS, MLP, POSITIONS, VOCAB = 768, 12, 12, 3072, 77, 49408
START, END = 49406, 49407
CONTEXT_WIDTH, POOLED_WIDTH = 4096, 2048
"""SD3's conditioning widths; the CLIP-L part is the first HIDDEN of each."""
HIDDEN_LAYER = LAYERS - 2
"""Index of the layer whose output is the conditioning (ComfyUI's SD3 CLIP-L uses layer -2)."""


def clip_state_dict(seed: int, embedding_std: float = 1.0) -> dict[str, torch.Tensor]:
    """A random CLIP-L text model's weights (fp16, `text_model.` keys), a function of the seed alone.

    Embeddings ~ N(0, embedding_std), so the hidden states are O(1) like a trained CLIP's; projections
    ~ N(0, 1/fan_in) scaled down by sqrt(2 * LAYERS) where they write into the residual stream; biases 0,
    layer norms the identity."""
    g = torch.Generator().manual_seed(seed)
    normal = lambda *shape, std: torch.randn(*shape, generator=g) * std  # noqa: E731
    resid = 1 / math.sqrt(2 * LAYERS)
    sd = {"text_model.embeddings.token_embedding.weight": normal(VOCAB, HIDDEN, std=embedding_std),
          "text_model.embeddings.position_embedding.weight": normal(POSITIONS, HIDDEN, std=embedding_std)}
    for i in range(LAYERS):
        p = f"text_model.encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj"):
            sd[p + f"self_attn.{name}.weight"] = normal(HIDDEN, HIDDEN, std=1 / math.sqrt(HIDDEN))
            sd[p + f"self_attn.{name}.bias"] = torch.zeros(HIDDEN)
        sd[p + "self_attn.out_proj.weight"] = normal(HIDDEN, HIDDEN, std=resid / math.sqrt(HIDDEN))
        sd[p + "self_attn.out_proj.bias"] = torch.zeros(HIDDEN)
        sd[p + "mlp.fc1.weight"] = normal(MLP, HIDDEN, std=1 / math.sqrt(HIDDEN))
        sd[p + "mlp.fc1.bias"] = torch.zeros(MLP)
        sd[p + "mlp.fc2.weight"] = normal(HIDDEN, MLP, std=resid / math.sqrt(MLP))
        sd[p + "mlp.fc2.bias"] = torch.zeros(HIDDEN)
        for ln in ("layer_norm1", "layer_norm2"):
            sd[p + f"{ln}.weight"] = torch.ones(HIDDEN)
            sd[p + f"{ln}.bias"] = torch.zeros(HIDDEN)
    sd["text_model.final_layer_norm.weight"] = torch.ones(HIDDEN)
    sd["text_model.final_layer_norm.bias"] = torch.zeros(HIDDEN)
    # CLIP-L's projection of the pooled vector: ComfyUI's SD3 path does not use it, but expects the key
    sd["text_projection.weight"] = normal(HIDDEN, HIDDEN, std=1 / math.sqrt(HIDDEN))
    return {k: v.half() for k, v in sd.items()}


def tokenize(prompt: str) -> list[int]:
    """The 77 token ids ComfyUI's CLIP-L tokenizer gives a plain prompt: start, BPE tokens, end, end padding."""
    from instant_clip_tokenizer import Tokenizer
    ids = Tokenizer().encode(prompt)
    if len(ids) > POSITIONS - 2:
        raise SSAEError(f"prompt {prompt!r} has {len(ids)} tokens; the world's prompts must fit one CLIP window "
                        f"of {POSITIONS - 2}: shorten it")
    return [START, *ids, END] + [END] * (POSITIONS - 2 - len(ids))


class TextEncoder:
    """CLIP-L as ComfyUI runs it for SD3: `encode` gives its 768-wide part, `comfy_conditioning` the padded one."""

    def __init__(self, state_dict: dict[str, torch.Tensor]):
        from transformers import CLIPTextConfig, CLIPTextModel
        cfg = CLIPTextConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=MLP, num_hidden_layers=LAYERS,
                             num_attention_heads=HEADS, max_position_embeddings=POSITIONS, hidden_act="quick_gelu",
                             bos_token_id=START, eos_token_id=END, pad_token_id=END)
        self.model = CLIPTextModel(cfg).eval()
        prefix = "text_model."
        weights = {k.removeprefix(prefix): v.float() for k, v in state_dict.items() if k.startswith(prefix)}
        # transformers 4 nests the text transformer under `text_model`, transformers 5 does not
        missing, unexpected = getattr(self.model, "text_model", self.model).load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise SSAEError(f"not a CLIP-L text model (missing {missing[:3]}, unexpected {unexpected[:3]}): "
                            "build the world again")

    @classmethod
    def load(cls, path: str | Path) -> TextEncoder:
        return cls(load_tensors(path, error=SSAEError))

    @torch.no_grad()
    def encode(self, prompts: list[str], batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden [N, 77, 768] of layer HIDDEN_LAYER, pooled [N, 768]) in float32, as ComfyUI computes them."""
        ids = torch.tensor([tokenize(p) for p in prompts], dtype=torch.long)
        hidden, pooled = [], []
        for chunk in ids.split(batch):
            out = self.model(input_ids=chunk, output_hidden_states=True)
            hidden.append(out.hidden_states[HIDDEN_LAYER + 1])  # hidden_states[0] is the embedding
            pooled.append(out.pooler_output)  # final layer norm, at the first end token
        return torch.cat(hidden), torch.cat(pooled)


def comfy_conditioning(hidden: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The CLIP-L part ([N, 77, 768], [N, 768]) zero-padded to SD3's widths ([N, 77, 4096], [N, 2048])."""
    pad = lambda x, n: torch.nn.functional.pad(x, (0, n - x.shape[-1]))  # noqa: E731
    return pad(hidden, CONTEXT_WIDTH), pad(pooled, POOLED_WIDTH)


def save_clip(state_dict: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> Path:
    """Write the text encoder file (atomically)."""
    return atomic_save(state_dict, metadata, path)
