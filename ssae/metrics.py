"""Metrics: reconstruction quality on a split, concept alignment, and decoder decorrelation.

Reconstruction figures are in the original feature space, so models with different preprocessing
compare on equal terms. Explained variance = 1 - SSE / SST, SST about the split's own mean.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F_

from .errors import ShapeMismatchError
from .ridge import ridge_solve
from .ssae_file import SSAE
from .store import FeatureSet
from .vocab import Vocabulary

Predictor = Callable[[torch.Tensor, list[list[str]]], torch.Tensor]
"""predict(features [n, F], labels) -> reconstruction [n, F]; a supervised model uses only the labels."""


class ReconstructionMeter:
    """Accumulates SSE, per-dimension sums and cosines over batches, so no split needs to fit in memory."""

    def __init__(self) -> None:
        self.n, self.sse, self.cos = 0, 0.0, 0.0
        self.s1: torch.Tensor | None = None
        self.s2: torch.Tensor | None = None

    def update(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        x, x_hat = x.double(), x_hat.double()
        self.n += x.shape[0]
        self.sse += float(((x - x_hat) ** 2).sum())
        self.cos += float(F_.cosine_similarity(x, x_hat, dim=1).sum())
        s1, s2 = x.sum(0), (x * x).sum(0)
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2

    def result(self) -> dict[str, float]:
        sst = float((self.s2 - self.s1 ** 2 / self.n).sum())
        n_values = self.n * self.s1.numel()
        return {"explained_variance": 1.0 - self.sse / max(sst, 1e-30), "cosine": self.cos / self.n,
                "mse": self.sse / n_values, "n": self.n}


def evaluate_predictor(predict: Predictor, data: FeatureSet, split: str | None = "test") -> dict[str, float]:
    """Reconstruction metrics of any predictor on a split of a feature set, streamed shard by shard."""
    rows = data.indices(split)
    meter = ReconstructionMeter()
    for sel, x in data.row_blocks(rows):
        meter.update(x, predict(x, [data.labels[i] for i in rows[sel].tolist()]))
    return meter.result()


def evaluate(ssae: SSAE, data: FeatureSet, split: str | None = "test") -> dict[str, float]:
    """How well an SSAE reconstructs a split from its labels alone (unseen combinations on 'test')."""
    if ssae.n_features != data.n_features:
        raise ShapeMismatchError(f"the SSAE decodes {ssae.n_features} features ({ssae.site} {ssae.feature_shape}) but "
                                 f"the feature set has {data.n_features} ({data.site} {data.feature_shape}): "
                                 "evaluate on features from the site the SSAE was trained on")
    return evaluate_predictor(lambda x, labels: ssae.reconstruct(labels), data, split)


def decoder_decorrelation(blocks: torch.Tensor) -> float:
    """Mean |cosine| between different concepts' flattened decoder blocks [K, d, F] (lower = more separate)."""
    flat = F_.normalize(blocks.reshape(blocks.shape[0], -1).double(), dim=1)
    c = (flat @ flat.T).abs()
    k = c.shape[0]
    return float((c.sum() - c.diagonal().sum()) / max(k * (k - 1), 1))


def probe_accuracy(train_z: torch.Tensor, train_labels: Sequence[Sequence[str]], test_z: torch.Tensor,
                   test_labels: Sequence[Sequence[str]], vocabulary: Vocabulary, ridge: float = 1e-2) -> float:
    """Accuracy of a linear probe (ridge classifier, argmax within each category) from latents to concepts."""
    Y = vocabulary.mask(train_labels).double()
    Z = torch.cat([train_z.double(), torch.ones(train_z.shape[0], 1, dtype=torch.float64)], 1)
    Wp = ridge_solve(Z.T @ Z, Z.T @ Y, ridge)
    scores = torch.cat([test_z.double(), torch.ones(test_z.shape[0], 1, dtype=torch.float64)], 1) @ Wp
    return _category_accuracy(scores, test_labels, vocabulary)


@torch.no_grad()
def ssae_alignment(ssae: SSAE, x: torch.Tensor, labels: Sequence[Sequence[str]], sweeps: int = 2) -> float:
    """Accuracy of reading each category's concept off features by decoding: per category, the concept whose
    reconstruction is nearest wins (coordinate descent from the first concept of every category)."""
    vocab = ssae.vocabulary
    y = ssae.pre.transform(x).to(ssae.model.W.device)
    cur = torch.zeros(x.shape[0], vocab.n_concepts)
    offsets = {}
    for cat, cs in vocab.categories.items():
        offsets[cat] = (vocab.index(cs[0]), len(cs))
        cur[:, offsets[cat][0]] = 1
    for _ in range(sweeps):
        for cat, (start, k) in offsets.items():
            errs = []
            for j in range(k):
                trial = cur.clone()
                trial[:, start:start + k] = 0
                trial[:, start + j] = 1
                errs.append(((ssae._decode_scaled(trial) - y) ** 2).sum(1).cpu())
            best = torch.stack(errs, 1).argmin(1)
            cur[:, start:start + k] = F_.one_hot(best, k).float()
    return _category_accuracy(cur.double(), labels, vocab)


def _category_accuracy(scores: torch.Tensor, labels: Sequence[Sequence[str]], vocabulary: Vocabulary) -> float:
    truth = vocabulary.mask(labels)
    hits = total = 0
    for cs in vocabulary.categories.values():
        idx = torch.tensor([vocabulary.index(c) for c in cs])
        has = truth[:, idx].sum(1) > 0
        pred = scores[:, idx].argmax(1)
        hits += int((truth[:, idx].argmax(1) == pred)[has].sum())
        total += int(has.sum())
    return hits / max(total, 1)
