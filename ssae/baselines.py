"""Baselines on the same data and metrics: the train mean, the additive closed form, and unsupervised SAEs.

The unsupervised SAEs (ReLU+L1 and TopK) auto-encode the features they are given, so their
reconstruction uses the test features themselves; what they lack is alignment: a linear probe from
their latents to the concepts shows how far their units are from the labelled concepts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .metrics import evaluate_predictor, probe_accuracy
from .preprocess import FeatureStats, PreprocessConfig, Preprocessor
from .ridge import ridge_fit
from .store import FeatureSet


@dataclass
class BaselineResult:
    name: str
    metrics: dict
    alignment: float | None
    uses_input: bool
    """True when the method reconstructs from the test features themselves (an auto-encoder)."""


def mean_baseline(data: FeatureSet, train: torch.Tensor) -> torch.Tensor:
    return data.load(train).mean(0)


def additive_fit(data: FeatureSet, train: torch.Tensor, ridge: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form x ~ b + sum of one vector per present concept (ridge on the one-hot concept mask).

    This is the function class of the paper's decoder: W·sigma(M ⊙ Y) with a fixed slot per concept is
    one vector per concept, so this is its optimum."""
    V, b = ridge_fit(data.mask(train), data.load(train), ridge)
    return V.float(), b.float()


class UnsupervisedSAE(nn.Module):
    """A standard SAE, z = act(W_enc (x - b_dec) + b_enc), x_hat = W_dec z + b_dec; act ReLU (+L1) or TopK."""

    def __init__(self, n_features: int, n_latents: int, k: int | None = None, generator=None):
        super().__init__()
        self.k = k
        W = torch.randn(n_latents, n_features, generator=generator) / math.sqrt(n_features)
        self.W_enc = nn.Parameter(W.clone())
        self.W_dec = nn.Parameter(W.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.b_dec = nn.Parameter(torch.zeros(n_features))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu((x - self.b_dec) @ self.W_enc.T + self.b_enc)
        if self.k is None:
            return pre
        top = pre.topk(self.k, dim=1)
        return torch.zeros_like(pre).scatter(1, top.indices, top.values)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return z @ self.W_dec.T + self.b_dec, z


def fit_unsupervised(Y: torch.Tensor, n_latents: int, k: int | None, l1: float = 1e-3, epochs: int = 20,
                     batch_size: int = 256, lr: float = 1e-3, seed: int = 0) -> UnsupervisedSAE:
    """Train an unsupervised SAE on preprocessed features Y [n, F] with Adam."""
    gen = torch.Generator().manual_seed(seed)
    sae = UnsupervisedSAE(Y.shape[1], n_latents, k, gen)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(Y.shape[0], generator=gen).split(batch_size):
            x_hat, z = sae(Y[idx])
            loss = ((x_hat - Y[idx]) ** 2).sum(1).mean()
            if k is None:
                loss = loss + l1 * Y.shape[1] * z.abs().sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return sae


def run_baselines(data: FeatureSet, n_latents: int = 256, topk: int = 16, epochs: int = 20,
                  seed: int = 0) -> list[BaselineResult]:
    """Mean, additive closed form, ReLU+L1 SAE and TopK SAE on the train split, measured on the test split."""
    train, test = data.indices("train"), data.indices("test")
    mean = mean_baseline(data, train)
    V, b = additive_fit(data, train)
    out = [
        BaselineResult("train mean", evaluate_predictor(lambda x, lab: mean.expand_as(x), data, "test"), None, False),
        BaselineResult("additive closed form (ridge)",
                       evaluate_predictor(lambda x, lab: data.vocabulary.mask(lab) @ V + b, data, "test"), None, False),
    ]
    pre = Preprocessor.fit(FeatureStats.from_chunks(x for _, x in data.row_blocks(train)), PreprocessConfig())
    Y_train = pre.transform(data.load(train))
    Y_test = pre.transform(data.load(test))
    train_labels = [data.labels[i] for i in train.tolist()]
    test_labels = [data.labels[i] for i in test.tolist()]
    for name, k in (("ReLU+L1 SAE (unsupervised)", None), (f"TopK SAE k={topk} (unsupervised)", topk)):
        sae = fit_unsupervised(Y_train, n_latents, k, epochs=epochs, seed=seed)
        with torch.no_grad():
            z_train, z_test = sae.encode(Y_train), sae.encode(Y_test)
            metrics = evaluate_predictor(lambda x, lab: pre.inverse(sae(pre.transform(x))[0]), data, "test")
        acc = probe_accuracy(z_train, train_labels, z_test, test_labels, data.vocabulary)
        out.append(BaselineResult(name, metrics, acc, True))
    return out
