"""`SSAE`: a trained decoder with its preprocessing and vocabulary, in the original feature space.

This is what an SSAE file holds and what every user-facing operation works on: compose an unseen
concept mix, reconstruct labelled samples, and edit features by swapping concepts.
File format (docs/FORMATS.md): one .safetensors, tensors `model.*` and `pre.*`, metadata `ssae.*`.
"""
from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from .errors import ModelFileError, ShapeMismatchError, SSAEError, VocabularyError
from .model import ModelConfig, SupervisedSAE
from .preprocess import PreprocessConfig, Preprocessor
from .safefile import atomic_save, json_meta, load_tensors, read_header
from .shapes import FeatureShape, n_features_of, unflatten
from .vocab import Vocabulary

MODEL_FORMAT = "ssae/2"
"""ssae/2 stores the readout in half precision and nothing for dimensions constant in training; ssae/1 files (a
float32 readout over every dimension a top-k selection kept) still load."""
READ_FORMATS = ("ssae/1", MODEL_FORMAT)
HALF_MAX = 65504.0
"""The largest float16; a readout with a larger value is stored in float32."""
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
ConceptWeights = Mapping[str, float]


class SSAE:
    """A supervised SAE ready to use: `compose`, `reconstruct`, `delta`, `edit`, `save`, `load`."""

    def __init__(self, model: SupervisedSAE, pre: Preprocessor, vocabulary: Vocabulary, site: str,
                 feature_shape: FeatureShape, info: dict | None = None):
        if model.cfg.n_concepts != vocabulary.n_concepts or model.cfg.n_features != pre.n_kept \
                or pre.n_features != n_features_of(feature_shape):
            raise ModelFileError("decoder, preprocessing and vocabulary sizes disagree: the SSAE is inconsistent")
        self.model, self.pre, self.vocabulary, self.site, self.feature_shape = \
            model.eval(), pre, vocabulary, site, feature_shape
        self.info = info or {}

    @property
    def n_features(self) -> int:
        return self.pre.n_features

    # -- concept weights -----------------------------------------------------------------------
    def weights(self, concepts: ConceptWeights | Sequence[str]) -> torch.Tensor:
        """[K] weight per concept from names (weight 1) or {name: weight}; names may be unique fragments."""
        items = concepts.items() if isinstance(concepts, Mapping) else ((c, 1.0) for c in concepts)
        w = torch.zeros(self.vocabulary.n_concepts)
        untrained = self.untrained
        for name, weight in items:
            i = self.vocabulary.index(name)
            if weight and self.vocabulary.concepts[i] in untrained:
                raise VocabularyError(f"concept {self.vocabulary.concepts[i]!r} was in no training sample of this "
                                      "SSAE, so its slot is untrained: choose another concept, or train on samples "
                                      "that have it")
            w[i] += float(weight)
        return w

    @property
    def untrained(self) -> set[str]:
        """Concepts that no training sample had (empty for files that do not record `concept_counts`)."""
        counts = self.info.get("concept_counts")
        if not isinstance(counts, dict):
            return set()
        return {c for c in self.vocabulary.concepts if counts.get(c) == 0}

    @torch.no_grad()
    def _decode_scaled(self, weights: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.decode(m.code(weights.to(m.W.device, m.W.dtype)))

    # -- generation ----------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, labels: Sequence[Sequence[str]]) -> torch.Tensor:
        """[N, F] features the SSAE predicts for labelled samples (seen or unseen combinations)."""
        return self.pre.inverse(self._decode_scaled(self.vocabulary.mask(labels))).cpu()

    @torch.no_grad()
    def compose(self, concepts: ConceptWeights | Sequence[str]) -> torch.Tensor:
        """[F] features of a concept mix, e.g. {"blond": 1, "horseback in the forest": 1, "hat": 0.5}."""
        return self.pre.inverse(self._decode_scaled(self.weights(concepts)[None]))[0].cpu()

    @torch.no_grad()
    def delta(self, add: ConceptWeights | Sequence[str] = (), remove: ConceptWeights | Sequence[str] = (),
              context: Sequence[str] | None = None, n_contexts: int = 64, seed: int = 0) -> torch.Tensor:
        """[F] change in raw features from removing and adding concepts.

        With `context` (the concepts of the sample being edited) it is exact; without, it is the mean
        over `n_contexts` sampled contexts that hold the removed concepts. For the paper's additive
        decoder both equal W·slot(new) - W·slot(old), the paper's edit.
        """
        add_w, rem_w = self.weights(add), self.weights(remove)
        if context is not None:
            bases = self.weights(context)[None]
        else:
            forced = {self.vocabulary.category_of(c): c for c, w in zip(self.vocabulary.concepts, rem_w) if w}
            rng = random.Random(seed)
            untrained = self.untrained
            seen = {cat: [c for c in cs if c not in untrained] or cs for cat, cs in self.vocabulary.categories.items()}
            combos = [[forced.get(cat, rng.choice(cs)) for cat, cs in seen.items()] for _ in range(n_contexts)]
            bases = self.vocabulary.mask(combos)
        after = bases - rem_w + add_w
        m = self.model
        dev = m.W.device
        dh = (m.basis(m.code(after.to(dev))) - m.basis(m.code(bases.to(dev)))).mean(0, keepdim=True)
        return self.pre.inverse_delta(dh @ m.W)[0].cpu()

    def edit(self, features: torch.Tensor, add: ConceptWeights | Sequence[str] = (),
             remove: ConceptWeights | Sequence[str] = (), strength: float = 1.0,
             context: Sequence[str] | None = None) -> torch.Tensor:
        """x' = x + strength · delta(add, remove): swap concepts without touching the prompt."""
        flat = features.reshape(-1, self.n_features) if features.numel() % self.n_features == 0 else None
        if flat is None:
            raise ShapeMismatchError(f"features of shape {list(features.shape)} do not hold whole samples of "
                                     f"{self.n_features} values: this SSAE was trained on {self.site} "
                                     f"{self.feature_shape}")
        d = self.delta(add, remove, context).to(features.device, features.dtype)
        return (flat + strength * d).reshape(features.shape)

    def unflatten(self, flat: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """[..., F] -> [..., *shape], or a dict of named parts for a multi-part feature (e.g. conditioning)."""
        return unflatten(flat, self.feature_shape)

    # -- what it is ----------------------------------------------------------------------------
    def summary(self) -> dict:
        """What a user should know about this SSAE: site and shape, decoder, vocabulary, training and metrics."""
        return {"site": self.site, "feature_shape": self.feature_shape, "n_features": self.n_features,
                "vocabulary": self.vocabulary.categories, "model": self.model.cfg.to_dict(),
                "preprocess": self.pre.config_dict(), "metrics": self.info.get("metrics"),
                "best_epoch": self.info.get("best_epoch"), "base_model": self.info.get("base_model")}

    def describe(self) -> str:
        """`summary` as text lines: what the loader node shows and `ssae inspect` prints."""
        cfg, pre = self.model.cfg, self.pre.config
        decoder = f"{cfg.decoder} decoder" + (f" (hidden {cfg.hidden})" if cfg.decoder == "mlp" else "")
        kept = "all dimensions" if pre.top_k is None else f"top {pre.top_k} dimensions"
        lines = [f"site: {self.site}  feature shape: {self.feature_shape} ({self.n_features:,} values)",
                 f"{decoder}, {cfg.code} code, d={cfg.d}; {kept}, {pre.scale} scaling"]
        lines += [f"{cat}: {', '.join(cs)}" for cat, cs in self.vocabulary.categories.items()]
        lines += [f"{split}: explained variance {m['explained_variance']:.4f}, cosine {m['cosine']:.4f}"
                  for split, m in (self.info.get("metrics") or {}).items()]
        return "\n".join(lines)

    # -- files ---------------------------------------------------------------------------------
    def compact(self) -> SSAE:
        """This SSAE without readout columns for the dimensions constant in training: they decode to their constant
        through the preprocessing either way (SD3's conditioning is zero in most channels of its CLIP rows), so
        decoding is unchanged. `ssae.train` returns this form, which is also what a file holds."""
        pre, keep = self.pre.without_constant()
        if pre is self.pre:
            return self
        m = self.model
        model = SupervisedSAE(replace(m.cfg, n_features=pre.n_kept, n_samples=0), random_readout=False)
        state = {k: v for k, v in m.state_dict().items() if k != "sample_code"}
        model.load_state_dict(state | {"W": m.W.detach()[:, keep], "b": m.b.detach()[keep]})
        return SSAE(model.to(m.W.device), pre, self.vocabulary, self.site, self.feature_shape, self.info)

    def metadata(self) -> dict[str, str]:
        return {"ssae.format": MODEL_FORMAT, "ssae.vocabulary": self.vocabulary.to_json(), "ssae.site": self.site,
                "ssae.feature_shape": json.dumps(self.feature_shape),
                "ssae.model": json.dumps(self.model.cfg.to_dict() | {"n_samples": 0}),  # free codes stay behind
                "ssae.preprocess": json.dumps(self.pre.config_dict()),
                **{f"ssae.{k}": json.dumps(v) for k, v in self.info.items()}}

    def save(self, path: str | Path, half: bool = True) -> Path:
        """Write one self-describing .safetensors file of `compact()`, atomically; with `half`, the readout W in
        half precision (a relative 5e-4 a weight; on the benchmark sets it moved no held-out explained variance
        by more than 2e-7) unless a value is beyond float16's range."""
        c = self.compact()
        tensors = {f"model.{k}": v for k, v in c.model.state_dict().items() if k != "sample_code"}
        W = tensors["model.W"]
        if half and (not W.numel() or float(W.abs().max()) <= HALF_MAX):
            tensors["model.W"] = W.half()
        return atomic_save(tensors | c.pre.tensors(), c.metadata(), path)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> SSAE:
        """Load and validate an SSAE file; metadata is checked before any tensor is read."""
        header, meta = read_header(path, ModelFileError)
        vocab, cfg, pre_cfg, shape, site, info = read_metadata(meta, Path(path).name)
        expected = expected_tensors(cfg, pre_cfg, n_features_of(shape))
        got = {k: list(v.shape) for k, v in header.items()}
        if got != expected:
            raise ModelFileError(f"{Path(path).name}: tensors {got} do not match the metadata, which implies "
                                 f"{expected}: the file is damaged or was edited; download it again")
        wrong = {k: v.dtype for k, v in header.items()
                 if v.dtype not in (("I32", "I64") if k == "pre.index" else FLOAT_DTYPES)}
        if wrong:
            raise ModelFileError(f"{Path(path).name}: tensors of the wrong type {wrong} (floats, and integer column "
                                 "numbers in pre.index): the file is damaged or was edited; download it again")
        t = load_tensors(path, None, ModelFileError, device)
        _check_index(t.get("pre.index"), n_features_of(shape), Path(path).name)
        model = SupervisedSAE(cfg, random_readout=False)
        model.load_state_dict({k[len("model."):]: v.float() for k, v in t.items() if k.startswith("model.")})
        pre = Preprocessor.from_tensors({k: v for k, v in t.items() if k.startswith("pre.")}, n_features_of(shape),
                                        pre_cfg)
        return cls(model.to(device), pre, vocab, site, shape, info)


def read_metadata(meta: dict[str, str], what: str):
    """Parse and cross-check an SSAE file's metadata (vocabulary, configs, shape) without its tensors."""
    fmt = meta.get("ssae.format")
    if fmt not in READ_FORMATS:
        raise ModelFileError(f"{what} is not an SSAE file of format {' or '.join(map(repr, READ_FORMATS))} (found "
                             f"{fmt!r}): choose a file written by ssae, or upgrade ssae if it is newer")
    try:
        vocab = Vocabulary.from_stored(json_meta(meta, "ssae.vocabulary", what, ModelFileError))
        cfg = ModelConfig.from_dict(json_meta(meta, "ssae.model", what, ModelFileError), what)
        pre_cfg = PreprocessConfig.from_dict(json_meta(meta, "ssae.preprocess", what, ModelFileError), what)
        shape = json_meta(meta, "ssae.feature_shape", what, ModelFileError)
        n = n_features_of(shape)
    except (SSAEError, TypeError, AttributeError) as e:
        raise ModelFileError(f"{what} has inconsistent metadata ({e}): download or train it again") from e
    if cfg.n_samples:
        raise ModelFileError(f"{what}: model metadata claims {cfg.n_samples} free sample codes, which an SSAE file "
                             "never holds (they become per-concept means): the file was edited; download it again")
    if cfg.n_concepts != vocab.n_concepts:
        raise ModelFileError(f"{what}: model has {cfg.n_concepts} concepts, vocabulary {vocab.n_concepts}")
    kept = pre_cfg.top_k if pre_cfg.top_k is not None and pre_cfg.top_k < n else n
    if cfg.n_features != kept and (fmt == "ssae/1" or cfg.n_features > kept):  # ssae/2 drops constant ones too
        raise ModelFileError(f"{what}: decoder writes {cfg.n_features} features, preprocessing keeps "
                             f"{'' if fmt == 'ssae/1' else 'at most '}{kept}")
    std = ("format", "vocabulary", "site", "feature_shape", "model", "preprocess")
    info = {}
    for key in meta:
        if key.startswith("ssae.") and key[5:] not in std:
            info[key[5:]] = json_meta(meta, key, what, ModelFileError)
    counts = info.get("concept_counts")
    if counts is not None and not (isinstance(counts, dict) and all(
            type(v) is int and v >= 0 for v in counts.values())):  # a bool is no count
        raise ModelFileError(f"{what}: 'ssae.concept_counts' must map concepts to sample counts: the file was "
                             "edited; download it again")
    return vocab, cfg, pre_cfg, shape, meta.get("ssae.site", "unknown"), info


def _check_index(index: torch.Tensor | None, n_features: int, what: str) -> None:
    """A top-k file's kept-column index must be distinct integers in 0..n_features-1."""
    if index is None:
        return
    if index.dtype not in (torch.int64, torch.int32) or index.numel() and (
            int(index.min()) < 0 or int(index.max()) >= n_features or index.unique().numel() != index.numel()):
        raise ModelFileError(f"{what}: 'pre.index' must hold distinct integer columns in 0..{n_features - 1}: "
                             "the file is damaged or was edited; download it again")


def expected_tensors(cfg: ModelConfig, pre: PreprocessConfig, n_features: int) -> dict[str, list[int]]:
    """Names and shapes an SSAE file with this metadata must hold."""
    t = {"model.embed": [cfg.n_concepts, cfg.d], "model.W": [cfg.basis_size, cfg.n_features],
         "model.b": [cfg.n_features], "pre.shift": [cfg.n_features], "pre.scale": [cfg.n_features]}
    if cfg.decoder == "mlp":
        t |= {"model.W1": [cfg.code_size, cfg.hidden], "model.b1": [cfg.hidden]}
    if cfg.n_features != n_features:
        t |= {"pre.index": [cfg.n_features], "pre.fill": [n_features]}
    return t
