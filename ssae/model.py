"""The supervised decoder-only SAE: concept slots -> code -> decoder -> features.

x_hat = readout(basis(c)) with c = flatten(w_k * sigma(E_k)) over concepts k (the slot code of
arXiv 2602.00924). basis(c) = c for the paper's additive decoder; [c, gelu(c W1 + b1)] for the
"mlp" decoder, which keeps exact concept composition but can model interactions between concepts.
Everything here works in the preprocessed space; `SSAE` (ssae.io) wraps it with the preprocessor.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F_
from torch import nn

from .errors import SSAEError


@dataclass(frozen=True)
class ModelConfig:
    """Shape and kind of the decoder; stored in the SSAE file as `ssae.model`."""

    n_concepts: int
    n_features: int
    """Size of the (preprocessed) feature the decoder writes."""
    d: int = 10
    """Slots per concept."""
    code: Literal["concept", "sample"] = "concept"
    """concept: one learned code per concept (the paper's average feature); sample: a free code per
    training sample (the paper's trainable inputs), turned into per-concept means after training."""
    activation: Literal["leaky_relu", "relu"] = "leaky_relu"
    decoder: Literal["linear", "mlp"] = "mlp"
    hidden: int = 256
    """Width of the mlp decoder's hidden layer."""
    n_samples: int = 0
    """Number of free codes while training a code='sample' model; 0 once trained (per-concept means kept)."""

    def __post_init__(self) -> None:
        for name, allowed in (("code", ("concept", "sample")), ("activation", ("leaky_relu", "relu")),
                              ("decoder", ("linear", "mlp"))):
            if getattr(self, name) not in allowed:
                raise SSAEError(f"unknown {name} {getattr(self, name)!r}: use one of {allowed}")
        sizes = ("n_concepts", "n_features", "d", "hidden", "n_samples")
        bad = [f"{k}={getattr(self, k)!r}" for k in sizes
               if isinstance(getattr(self, k), bool) or not isinstance(getattr(self, k), int)]
        if bad:
            raise SSAEError(f"model sizes must be integers, got {', '.join(bad)}")
        if min(self.n_concepts, self.n_features, self.d) < 1 or (self.decoder == "mlp" and self.hidden < 1):
            raise SSAEError(f"model sizes must be positive: {self}")
        if self.n_samples < 0:
            raise SSAEError(f"n_samples must be >= 0, got {self.n_samples}")

    @property
    def code_size(self) -> int:
        return self.n_concepts * self.d

    @property
    def basis_size(self) -> int:
        return self.code_size + (self.hidden if self.decoder == "mlp" else 0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class SupervisedSAE(nn.Module):
    """Decoder-only SAE over a K-concept vocabulary, in the preprocessed feature space."""

    def __init__(self, cfg: ModelConfig, generator: torch.Generator | None = None, random_readout: bool = True):
        """`random_readout=False` leaves W at zero for a caller that solves or loads it: drawing a [P, F]
        normal matrix only to overwrite it costs seconds and gigabytes at SD3.5 size. W is drawn last, so
        the other parameters take the same values either way."""
        super().__init__()
        self.cfg = cfg
        K, d, P = cfg.n_concepts, cfg.d, cfg.basis_size
        rand = lambda *s: torch.rand(*s, generator=generator)  # U(0,1) init as the reference code
        if cfg.code == "concept":
            self.embed = nn.Parameter(rand(K, d))
        else:
            if cfg.n_samples:
                self.sample_code = nn.Parameter(rand(cfg.n_samples, K, d))
            self.register_buffer("embed", torch.ones(K, d))  # per-concept means, see finalize_sample_codes
        if cfg.decoder == "mlp":
            self.W1 = nn.Parameter(torch.randn(cfg.code_size, cfg.hidden, generator=generator) / cfg.code_size ** 0.5)
            self.b1 = nn.Parameter(torch.zeros(cfg.hidden))
        self.W = nn.Parameter(torch.randn(P, cfg.n_features, generator=generator).div_(P ** 0.5) if random_readout
                              else torch.zeros(P, cfg.n_features))
        self.b = nn.Parameter(torch.zeros(cfg.n_features))

    # -- code ---------------------------------------------------------------------------------
    def act(self, y: torch.Tensor) -> torch.Tensor:
        return F_.leaky_relu(y, 0.2) if self.cfg.activation == "leaky_relu" else F_.relu(y)

    def slots(self) -> torch.Tensor:
        """[K, d] activated per-concept slot values used for composition."""
        return self.act(self.embed) if self.cfg.code == "concept" else self.embed

    def code(self, weights: torch.Tensor, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[N, K] concept weights (a binary mask for a training sample) -> [N, K*d] slot code."""
        if sample_ids is not None and self.cfg.code == "sample":
            slots = self.act(self.sample_code[sample_ids])  # sigma(M ⊙ Y) = M ⊙ sigma(Y), sigma(0) = 0
        else:
            slots = self.slots().unsqueeze(0)
        return (weights.unsqueeze(-1) * slots).flatten(1)

    @torch.no_grad()
    def finalize_sample_codes(self, mask: torch.Tensor) -> None:
        """Per-concept code of a 'sample' model: each concept's mean slot over the samples that have it."""
        if self.cfg.code != "sample":
            return
        act = self.act(self.sample_code) * mask.unsqueeze(-1)
        self.embed.copy_(act.sum(0) / mask.sum(0).clamp(min=1).unsqueeze(-1))

    # -- decoder ------------------------------------------------------------------------------
    def basis(self, code: torch.Tensor) -> torch.Tensor:
        """[N, K*d] code -> [N, P] the features the linear readout combines."""
        if self.cfg.decoder == "linear":
            return code
        return torch.cat([code, F_.gelu(code @ self.W1 + self.b1)], dim=1)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """[N, K*d] -> [N, F] preprocessed features."""
        return self.basis(code) @ self.W + self.b

    def forward(self, mask: torch.Tensor, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.code(mask, sample_ids))

    def concept_blocks(self) -> torch.Tensor:
        """[K, d, F] the linear decoder block of each concept (the paper's decorrelation object)."""
        K, d = self.cfg.n_concepts, self.cfg.d
        return self.W[: K * d].reshape(K, d, -1)
