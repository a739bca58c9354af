"""The supervised decoder-only SAE: concept slots -> code -> decoder -> features.

x_hat = readout(basis(c)) with c = flatten(w_k * sigma(E_k)) over concepts k (the slot code of
arXiv 2602.00924). basis(c) = c for the paper's additive decoder; [c, gelu(c W1 + b1)] for the
"mlp" decoder, which keeps exact concept composition but can model interactions between concepts.
Everything here works in the preprocessed space; `ssae.ssae_file.SSAE` wraps it with the preprocessor.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F_
from torch import nn

from .config import check_choice, check_int, from_dict


@dataclass(frozen=True, kw_only=True)
class DecoderConfig:
    """The kind of decoder, apart from the sizes that the data gives: what a preset chooses."""

    d: int = 10
    """Slots per concept."""
    code: Literal["concept", "sample"] = "concept"
    """concept: one learned code per concept (the paper's average feature); sample: a free code per
    training sample (the paper's trainable inputs), turned into per-concept means after training."""
    activation: Literal["leaky_relu", "relu"] = "leaky_relu"
    decoder: Literal["linear", "mlp"] = "mlp"
    hidden: int = 256
    """Width of the mlp decoder's hidden layer."""

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_choice(owner, "code", self.code, ("concept", "sample"))
        check_choice(owner, "activation", self.activation, ("leaky_relu", "relu"))
        check_choice(owner, "decoder", self.decoder, ("linear", "mlp"))
        check_int(owner, "d", self.d, 1)
        check_int(owner, "hidden", self.hidden, 1 if self.decoder == "mlp" else 0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, what: str = ""):
        return from_dict(cls, d, what)


@dataclass(frozen=True, kw_only=True)
class ModelConfig(DecoderConfig):
    """A decoder with its sizes; stored in the SSAE file as `ssae.model`."""

    n_concepts: int
    n_features: int
    """Size of the (preprocessed) feature the decoder writes."""
    n_samples: int = 0
    """Number of free codes while training a code='sample' model; 0 once trained (per-concept means kept)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("ModelConfig", "n_concepts", self.n_concepts, 1)
        check_int("ModelConfig", "n_features", self.n_features, 1)
        check_int("ModelConfig", "n_samples", self.n_samples, 0)

    @classmethod
    def of(cls, decoder: DecoderConfig, n_concepts: int, n_features: int, n_samples: int = 0) -> ModelConfig:
        kind = {k: v for k, v in asdict(decoder).items() if k in DecoderConfig.__dataclass_fields__}
        return cls(**kind, n_concepts=n_concepts, n_features=n_features, n_samples=n_samples)

    @property
    def code_size(self) -> int:
        return self.n_concepts * self.d

    @property
    def basis_size(self) -> int:
        return self.code_size + (self.hidden if self.decoder == "mlp" else 0)


class SupervisedSAE(nn.Module):
    """Decoder-only SAE over a K-concept vocabulary, in the preprocessed feature space."""

    def __init__(self, cfg: ModelConfig, generator: torch.Generator | None = None, random_readout: bool = True):
        """`random_readout=False` leaves W at zero for a caller that solves or loads it: drawing a [P, F]
        normal matrix only to overwrite it costs seconds and gigabytes at SD3.5 size. W is drawn last, so
        the other parameters take the same values either way."""
        super().__init__()
        self.cfg = cfg
        K, d, P = cfg.n_concepts, cfg.d, cfg.basis_size

        def rand(*s):  # U(0,1) init as the reference code
            return torch.rand(*s, generator=generator)
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

    def code(self, weights: torch.Tensor, sample_ids: torch.Tensor | None = None,
             slots: torch.Tensor | None = None) -> torch.Tensor:
        """[N, K] concept weights (a binary mask for a training sample) -> [N, K*d] slot code: from the
        samples' own codes (`sample_ids`, a 'sample' model in training), the given [K, d] `slots`, or the
        model's per-concept slots."""
        if sample_ids is not None and self.cfg.code == "sample":
            slots = self.act(self.sample_code[sample_ids])  # sigma(M ⊙ Y) = M ⊙ sigma(Y), sigma(0) = 0
        else:
            slots = (self.slots() if slots is None else slots).unsqueeze(0)
        return (weights.unsqueeze(-1) * slots).flatten(1)

    def concept_means(self, mask: torch.Tensor, sample_ids: torch.Tensor) -> torch.Tensor:
        """[K, d] each concept's mean activated slot over the given samples that have it ('sample' models):
        the code a 'sample' model composes with, and predicts unseen samples with."""
        act = self.act(self.sample_code[sample_ids]) * mask.unsqueeze(-1)
        return act.sum(0) / mask.sum(0).clamp(min=1).unsqueeze(-1)

    @torch.no_grad()
    def finalize_sample_codes(self, mask: torch.Tensor, sample_ids: torch.Tensor) -> None:
        """Keep the per-concept means of a 'sample' model's codes over the given (trained) samples."""
        if self.cfg.code == "sample":
            self.embed.copy_(self.concept_means(mask, sample_ids))

    # -- decoder ------------------------------------------------------------------------------
    def hidden(self, code: torch.Tensor) -> torch.Tensor:
        """[N, K*d] code -> [N, hidden] the mlp decoder's hidden units."""
        return F_.gelu(code @ self.W1 + self.b1)

    def basis(self, code: torch.Tensor) -> torch.Tensor:
        """[N, K*d] code -> [N, P] the features the linear readout combines: the code, then the hidden units."""
        if self.cfg.decoder == "linear":
            return code
        return torch.cat([code, self.hidden(code)], dim=1)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """[N, K*d] -> [N, F] preprocessed features."""
        return self.basis(code) @ self.W + self.b

    def forward(self, mask: torch.Tensor, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.code(mask, sample_ids))

    def concept_blocks(self) -> torch.Tensor:
        """[K, d, F] the linear decoder block of each concept (the paper's decorrelation object)."""
        K, d = self.cfg.n_concepts, self.cfg.d
        return self.W[: K * d].reshape(K, d, -1)

    def fold_code(self, X_CX: torch.Tensor) -> torch.Tensor:
        """[K*d, X] rows that multiply the slot code -> [K, X] rows that multiply the concept weights: as the
        code is w_k * slot_k, c @ X = w @ fold(X) with fold(X)[k] = slot_k @ X[k*d:(k+1)*d]."""
        K, d = self.cfg.n_concepts, self.cfg.d
        return torch.einsum("kd,kdx->kx", self.slots().to(X_CX.dtype), X_CX.reshape(K, d, -1))


def merge_members(members: list[SupervisedSAE], n_features: int | None = None) -> SupervisedSAE:
    """One model whose output is the mean of the members' outputs, for members that differ only in their
    hidden layers and readouts (concept codes, mlp decoders, the same vocabulary and features).

    Its slots are all 1, so its code is the concept weights repeated d times; member e's code rows are
    folded into that (`fold_code`), and its hidden layer stacks the members' hidden units. The readout W, b
    is left at zero: `member_readout_rows` gives the rows that make it the members' mean. One member is
    returned as it is. `n_features` sizes the merged readout when the members were built without one (a
    one-column stand-in: at SD3.5 size each member's unused [P, F] readout would cost gigabytes)."""
    if len(members) == 1 and n_features in (None, members[0].cfg.n_features):
        return members[0]
    first = members[0].cfg
    d = first.d
    cfg = ModelConfig(**(first.to_dict() | {"hidden": sum(m.cfg.hidden for m in members), "n_samples": 0,
                                            "n_features": n_features or first.n_features}))
    merged = SupervisedSAE(cfg, random_readout=False).to(members[0].W1.device)
    with torch.no_grad():
        merged.embed.fill_(1.0)  # leaky_relu(1) = relu(1) = 1
        merged.W1.copy_(torch.cat([m.fold_code(m.W1) for m in members], 1).repeat_interleave(d, 0) / d)
        merged.b1.copy_(torch.cat([m.b1 for m in members]))
    return merged


def member_readout_rows(members: list[SupervisedSAE], rows: list[torch.Tensor]) -> torch.Tensor:
    """The readout rows of `merge_members(members)` from each member's own readout rows [P_e, X] (W_e, or
    any linear factor of it): the mean of the members' predictions, in the merged basis (whose slots are 1,
    so even one member's code rows are folded; `merge_members` returns a lone member unmerged only when it
    needs no new readout size, and then its own rows are the answer)."""
    d = members[0].cfg.d
    C = members[0].cfg.code_size
    code = sum(m.fold_code(r[:C]) for m, r in zip(members, rows)).repeat_interleave(d, 0) / (d * len(members))
    return torch.cat([code] + [r[C:] / len(members) for r in rows])
