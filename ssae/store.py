"""Feature sets: labelled features on disk, one .safetensors file or a folder of shards with a manifest.

Format (docs/FORMATS.md): tensor `features` [N, F]; metadata `ssae.format`, `ssae.vocabulary`,
`ssae.labels`, optional `ssae.split`, `ssae.prompts`, `ssae.site`, `ssae.feature_shape`.
A folder holds shard files of that same format plus `manifest.json`; appending writes one new shard
and then the manifest, both atomically, so a crash at any point leaves every completed shard readable.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import FeatureFileError, VocabularyError
from .layout import TokenLayout, layout_of_shape, parts_of, relayout
from .safefile import (
    MAX_HEADER_BYTES,
    atomic_save,
    atomic_write_text,
    json_meta,
    load_tensors,
    loads_json,
    read_header,
    tensor_slices,
)
from .shapes import FeatureShape, n_features_of
from .vocab import Vocabulary

FEATURES_FORMAT = "ssae-features/1"
MANIFEST = "manifest.json"
SPLITS = ("train", "test")
MAX_FRAGMENT_LABELS = 10_000
"""Stored labels may name concepts by unique fragments; more distinct fragments than this are refused
(each costs a scan of the whole vocabulary)."""


def check_finite(x: torch.Tensor, what: str, ids: torch.Tensor | None = None) -> None:
    """Refuse NaN/inf features, naming the first bad sample (its number in `ids` when given)."""
    bad = ~torch.isfinite(x).reshape(x.shape[0], -1).all(1)
    if bad.any():
        i = int(bad.nonzero()[0])
        i = int(ids[i]) if ids is not None else i
        raise FeatureFileError(f"{what}: sample {i} has NaN or inf features ({int(bad.sum())} bad samples in all); "
                               "drop those samples or capture them again (e.g. in float32)")


@dataclass
class FeatureSet:
    """Metadata of a feature set and lazy access to its rows; nothing large is read on open."""

    shards: list[Path]
    counts: list[int]
    vocabulary: Vocabulary
    labels: list[list[str]]
    split: list[str] | None
    prompts: list[str] | None
    site: str
    feature_shape: FeatureShape
    n_features: int

    def __len__(self) -> int:
        return len(self.labels)

    def indices(self, split: str | None = None) -> torch.Tensor:
        """Row indices of a split ('train'/'test'); all rows for None. An unsplit set is all 'train'."""
        if split is None:
            return torch.arange(len(self))
        if split not in SPLITS:
            raise FeatureFileError(f"unknown split {split!r}: use 'train' or 'test'")
        tags = self.split or ["train"] * len(self)
        idx = torch.tensor([i for i, s in enumerate(tags) if s == split], dtype=torch.long)
        if idx.numel() == 0:
            raise FeatureFileError(f"the {split!r} split of this feature set is empty: "
                                   f"it has {len(self)} samples with splits {sorted(set(tags))}")
        return idx

    def mask(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        labels = self.labels if rows is None else [self.labels[i] for i in rows.tolist()]
        return self.vocabulary.mask(labels)

    def _shard_rows(self, rows: torch.Tensor) -> Iterator[tuple[Path, torch.Tensor, torch.Tensor]]:
        """(shard, positions in `rows`, rows within the shard) for each shard holding some of `rows`."""
        start = 0
        for path, n in zip(self.shards, self.counts):
            sel = ((rows >= start) & (rows < start + n)).nonzero().flatten()
            if sel.numel():
                yield path, sel, rows[sel] - start
            start += n

    def row_blocks(self, rows: torch.Tensor | None = None,
                   dtype=torch.float32) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(positions in `rows`, features) per shard, in order; features checked to be finite."""
        rows = torch.arange(len(self)) if rows is None else rows
        for path, sel, local in self._shard_rows(rows):
            x = load_tensors(path, ["features"], FeatureFileError)["features"][local].to(dtype)
            check_finite(x, path.name, rows[sel])
            yield sel, x

    def column_blocks(self, rows: torch.Tensor | None = None, block: int = 1 << 15, cols: tuple[int, int] | None = None,
                      dtype=torch.float32) -> Iterator[tuple[int, torch.Tensor]]:
        """(first column, [len(rows), width] features) for each block of columns a..b of `cols`, read from the
        memory-mapped shards: a pass over a set too large for memory that holds one block at a time."""
        rows = torch.arange(len(self)) if rows is None else rows
        first, last = cols if cols is not None else (0, self.n_features)
        parts = list(self._shard_rows(rows))
        with tensor_slices([p for p, _, _ in parts], "features", FeatureFileError) as handles:
            for a in range(first, last, block):
                b = min(a + block, last)
                out = torch.empty(rows.numel(), b - a, dtype=dtype)
                for (path, sel, local), h in zip(parts, handles):
                    try:
                        x = h[:, a:b][local].to(dtype)
                    except Exception as e:  # safetensors raises its own untyped errors on damaged data
                        raise FeatureFileError(f"{path.name} could not be read ({e}): the file is damaged") from e
                    check_finite(x, path.name, rows[sel])
                    out[sel] = x
                yield a, out

    def load(self, rows: torch.Tensor | None = None, dtype=torch.float32) -> torch.Tensor:
        """[len(rows), F] features of the chosen rows, in that order."""
        rows = torch.arange(len(self)) if rows is None else rows
        out = torch.empty(rows.numel(), self.n_features, dtype=dtype)
        for sel, x in self.row_blocks(rows, dtype):
            out[sel] = x
        return out


def save_features(path: str | Path, features: torch.Tensor, vocabulary: Vocabulary, labels: Sequence[Sequence[str]],
                  split: Sequence[str] | None = None, prompts: Sequence[str] | None = None,
                  site: str = "unknown", feature_shape: FeatureShape | None = None) -> Path:
    """Write one feature-set file atomically after validating everything that goes in."""
    features = features.reshape(features.shape[0], -1) if features.ndim > 2 else features
    meta = _validated_meta(features, vocabulary, labels, split, prompts, site, feature_shape, Path(path).name)
    return atomic_save({"features": features}, meta, path)


def append_features(folder: str | Path, features: torch.Tensor, vocabulary: Vocabulary,
                    labels: Sequence[Sequence[str]], split: Sequence[str] | None = None,
                    prompts: Sequence[str] | None = None, site: str = "unknown",
                    feature_shape: FeatureShape | None = None) -> Path:
    """Add a shard to a feature-set folder (created if needed); existing shards are never rewritten."""
    folder = Path(folder)
    fs = feature_shape if feature_shape is not None else [int(features[0].numel())]
    manifest = _read_manifest(folder) if (folder / MANIFEST).exists() else None
    if manifest is not None:
        if not {"site", "n_features", "vocabulary"} <= manifest.keys():
            raise FeatureFileError(f"{folder / MANIFEST} is damaged (it lacks site, n_features or vocabulary): "
                                   "rebuild it from the shard files or append to a new folder")
        if (manifest["site"], manifest["n_features"], manifest["vocabulary"]) != \
                (site, n_features_of(fs), vocabulary.categories):
            raise FeatureFileError(
                f"{folder} holds features of site {manifest['site']!r}, size {manifest['n_features']} and another "
                f"vocabulary; these are site {site!r}, size {n_features_of(fs)}: append to a new folder instead")
        held = manifest.get("feature_shape")
        if held is not None and held != json.loads(json.dumps(fs)):
            raise FeatureFileError(
                f"{folder} holds features of shape {held}; these are {fs}, the same size in another token layout "
                "(e.g. a longer prompt, or T5 rows where the set has none), whose rows would not line up: save "
                "them to a new folder, or replace the set")
    shards = manifest["shards"] if manifest else []
    k = len(shards)
    while (folder / f"shard-{k:05d}.safetensors").exists():  # written before a crash that lost its manifest entry
        k += 1
    name = f"shard-{k:05d}.safetensors"
    save_features(folder / name, features, vocabulary, labels, split, prompts, site, feature_shape)
    shards = shards + [{"file": name, "n": len(labels), "digests": sample_digests(features, prompts)}]
    doc = {"format": FEATURES_FORMAT, "site": site, "n_features": n_features_of(fs), "feature_shape": fs,
           "vocabulary": vocabulary.categories, "shards": shards}
    atomic_write_text(json.dumps(doc, indent=1), folder / MANIFEST)
    return folder / name


def replace_features(folder: str | Path, features: torch.Tensor, vocabulary: Vocabulary,
                     labels: Sequence[Sequence[str]], split: Sequence[str] | None = None,
                     prompts: Sequence[str] | None = None, site: str = "unknown",
                     feature_shape: FeatureShape | None = None) -> Path:
    """A feature-set folder holding just these samples, in place of what it held: built beside it under a hidden
    name and swapped in, so that a crash leaves the old set or the new one, never a mix of the two."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=folder.parent))
    try:
        shard = append_features(staged, features, vocabulary, labels, split, prompts, site, feature_shape)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
        folder.rename(old / folder.name)
        staged.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staged.rename(folder)
    return folder / shard.name


def load_features(path: str | Path) -> FeatureSet:
    """Open a feature-set file or folder, validating all metadata; features stay on disk until asked for."""
    path = Path(path)
    if not path.exists():
        raise FeatureFileError(f"no feature set at {path}: give a .safetensors file or a folder with {MANIFEST}")
    if path.is_dir():
        files = [path / s["file"] for s in _read_manifest(path)["shards"]]
        if not files:
            raise FeatureFileError(f"{path} has no shards yet: capture and save some features first")
    else:
        files = [path]
    parts = [_open_shard(f) for f in files]
    first = parts[0]
    for p, f in zip(parts[1:], files[1:]):
        if (p.site, p.n_features, p.vocabulary, p.feature_shape) != \
                (first.site, first.n_features, first.vocabulary, first.feature_shape):
            raise FeatureFileError(f"shard {f.name} disagrees with {files[0].name} on site, size, feature shape or "
                                   "vocabulary: move it to a folder of its own")
    has_split, has_prompts = any(p.split for p in parts), all(p.prompts for p in parts)
    return FeatureSet(
        shards=files, counts=[len(p.labels) for p in parts], vocabulary=first.vocabulary,
        labels=[lab for p in parts for lab in p.labels],
        split=[s for p in parts for s in (p.split or ["train"] * len(p.labels))] if has_split else None,
        prompts=[s for p in parts for s in p.prompts] if has_prompts else None,
        site=first.site, feature_shape=first.feature_shape, n_features=first.n_features)


def relayout_features(data: FeatureSet, out: str | Path, t5_rows: int = 77) -> Path:
    """Write conditioning features stored in another layout (diffusers' 77 CLIP + 256 T5 rows, the paper's) as a
    new feature-set folder in ComfyUI's: the same CLIP rows and `t5_rows` T5 rows (77 for SD3 with T5 in
    ComfyUI, 0 for CLIP alone), one shard per shard read, labels, splits and prompts kept."""
    out = Path(out)
    if out.exists():
        raise FeatureFileError(f"{out} exists: give a new folder for the converted feature set")
    parts = parts_of(data.feature_shape)
    if parts is None:
        raise FeatureFileError(f"feature shape {data.feature_shape} is no SD3 conditioning of a known layout: give "
                               "named parts {'clip': [77, 4096], 't5': [256, 4096], 'pooled_output': [2048]} or "
                               "333, 154 or 77 rows of 4096 values (flat or not), with or without 2048 pooled")
    target = TokenLayout(layout_of_shape(parts).clip, t5_rows)
    for sel, x in data.row_blocks():
        y, shape = relayout(x, parts, target)
        rows = sel.tolist()
        append_features(out, y, data.vocabulary, [data.labels[i] for i in rows],
                        [data.split[i] for i in rows] if data.split else None,
                        [data.prompts[i] for i in rows] if data.prompts else None, "conditioning", shape)
    return out


def sample_digests(features: torch.Tensor, prompts: Sequence[str] | None = None) -> list[str]:
    """A short digest of each sample: its prompt and feature values (as float32). A prompt captured
    again the same way (its conditioning, or a block at the same seed) has the same digest; a capture at
    another seed, with other features, has another."""
    x = features.reshape(features.shape[0], -1).detach().float().cpu().contiguous()
    out = []
    for i in range(x.shape[0]):
        h = hashlib.blake2b(digest_size=8)
        h.update(json.dumps(prompts[i] if prompts is not None else None).encode())
        h.update(x[i].numpy().tobytes())
        out.append(h.hexdigest())
    return out


def new_samples(folder: str | Path, features: torch.Tensor, prompts: Sequence[str] | None = None) -> list[int]:
    """Positions of the samples that a feature-set folder does not hold yet (and that no earlier position of
    the batch repeats): what an append adds without doubling a prompt set that is saved twice."""
    folder = Path(folder)
    held = _held_digests(folder) if (folder / MANIFEST).exists() else set()
    keep = []
    for i, d in enumerate(sample_digests(features, prompts)):
        if d not in held:
            held.add(d)
            keep.append(i)
    return keep


def _held_digests(folder: Path) -> set[str]:
    """Digests of every sample in a folder: from its manifest, or read off a shard written before digests were."""
    held: set[str] = set()
    for s in _read_manifest(folder)["shards"]:
        digests = s.get("digests")
        if digests is None:
            x = load_tensors(folder / s["file"], ["features"], FeatureFileError)["features"]
            digests = sample_digests(x, _open_shard(folder / s["file"]).prompts)
        elif not (isinstance(digests, list) and all(isinstance(d, str) for d in digests)):
            raise FeatureFileError(f"{folder / MANIFEST} is damaged (a shard's digests are not a list of strings): "
                                   "rebuild it from the shard files or capture again")
        held.update(digests)
    return held


def count_samples(folder: str | Path) -> int:
    """Samples in a feature-set folder, read off its manifest alone: `len(load_features(folder))` without
    opening every shard, which a capture queue would otherwise pay on each save (O(n) each, O(n²) in all)."""
    folder = Path(folder)
    counts = [s.get("n") for s in _read_manifest(folder)["shards"]]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in counts):
        raise FeatureFileError(f"{folder / MANIFEST} is damaged (a shard without a sample count): "
                               "rebuild it from the shard files or capture again")
    return sum(counts)


# -- internals ----------------------------------------------------------------------------------

def _validated_meta(features, vocabulary, labels, split, prompts, site, feature_shape, what) -> dict[str, str]:
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise FeatureFileError(f"{what}: features must be [N, F] with N > 0 and F > 0, "
                               f"got shape {list(features.shape)}")
    if not features.is_floating_point():
        raise FeatureFileError(f"{what}: features must be floating point, got {features.dtype}")
    N, F = features.shape
    check_finite(features, what)
    if len(labels) != N:
        raise FeatureFileError(f"{what}: {len(labels)} label lists for {N} samples: give one list of concepts per "
                               "sample")
    vocabulary.mask(labels)  # unknown concepts raise VocabularyError naming the known ones
    labels = [[vocabulary.resolve(c) for c in row] for row in labels]
    feature_shape = feature_shape if feature_shape is not None else [F]
    try:
        n_features_of(feature_shape)
    except TypeError as e:
        raise FeatureFileError(f"{what}: bad feature_shape {feature_shape!r}: {e}") from e
    if n_features_of(feature_shape) != F:
        raise FeatureFileError(f"{what}: feature_shape {feature_shape} has {n_features_of(feature_shape)} values, "
                               f"but each sample has {F}")
    meta = {"ssae.format": FEATURES_FORMAT, "ssae.vocabulary": vocabulary.to_json(), "ssae.labels": json.dumps(labels),
            "ssae.site": site, "ssae.feature_shape": json.dumps(feature_shape)}
    for key, values in (("split", split), ("prompts", prompts)):
        if values is not None:
            if len(values) != N:
                raise FeatureFileError(f"{what}: {len(values)} {key} entries for {N} samples")
            meta[f"ssae.{key}"] = json.dumps(list(values))
    if split is not None and not set(split) <= set(SPLITS):
        raise FeatureFileError(f"{what}: split entries must be 'train' or 'test', got "
                               f"{sorted(set(split) - set(SPLITS))}")
    return meta


def _open_shard(path: Path) -> FeatureSet:
    """One validated file as a one-shard feature set."""
    tensors, meta = read_header(path, FeatureFileError)
    what = f"feature set {path.name}"
    if "features" not in tensors or len(tensors["features"].shape) != 2:
        raise FeatureFileError(f"{what} has no 2-D 'features' tensor (found {sorted(tensors)}): "
                               "write it with ssae.save_features or the SSAESaveFeatures node")
    N, F = tensors["features"].shape
    if N == 0 or F == 0:
        raise FeatureFileError(f"{what} holds features of shape [{N}, {F}]: it needs at least one sample and feature")
    if meta.get("ssae.format", FEATURES_FORMAT) != FEATURES_FORMAT:
        raise FeatureFileError(f"{what} has format {meta['ssae.format']!r}; this ssae reads {FEATURES_FORMAT!r}: "
                               "upgrade ssae")
    try:
        vocab = Vocabulary.from_stored(json_meta(meta, "ssae.vocabulary", what, FeatureFileError))
    except VocabularyError as e:
        raise FeatureFileError(f"{what}: bad vocabulary metadata: {e}") from e
    labels = json_meta(meta, "ssae.labels", what, FeatureFileError)
    if not isinstance(labels, list) or len(labels) != N:
        raise FeatureFileError(f"{what}: 'ssae.labels' must list one concept list per sample: "
                               f"{len(labels) if isinstance(labels, list) else 'no list'} for {N} samples")
    labels = _checked_labels(labels, vocab, what)
    split = json_meta(meta, "ssae.split", what, FeatureFileError, None)
    prompts = json_meta(meta, "ssae.prompts", what, FeatureFileError, None)
    for key, v in (("split", split), ("prompts", prompts)):
        if v is not None and (not isinstance(v, list) or len(v) != N):
            raise FeatureFileError(f"{what}: 'ssae.{key}' must have one entry per sample ({N})")
        if v is not None and not all(isinstance(s, str) for s in v):
            raise FeatureFileError(f"{what}: 'ssae.{key}' entries must be strings")
    if split is not None and not set(split) <= set(SPLITS):
        raise FeatureFileError(f"{what}: split entries must be 'train' or 'test'")
    shape = json_meta(meta, "ssae.feature_shape", what, FeatureFileError, [F])
    try:
        size = n_features_of(shape)
    except TypeError:
        size = -1
    if size != F:
        raise FeatureFileError(f"{what}: 'ssae.feature_shape' {shape} does not match {F} features per sample")
    return FeatureSet([path], [N], vocab, labels, split, prompts, meta.get("ssae.site", "unknown"), shape, F)


def _checked_labels(labels: list, vocab: Vocabulary, what: str) -> list:
    """Stored labels checked row by row, without the dense [N, K] mask (which a hostile N x K could make huge)."""
    known: dict[str, str] = {c: c for c in vocab.concepts}
    fragments = 0
    for i, row in enumerate(labels):
        if not isinstance(row, list):
            raise FeatureFileError(f"{what}: bad labels: sample {i} must have a list of concept names, got {row!r:.80}")
        for name in row:
            if not isinstance(name, str):
                raise FeatureFileError(f"{what}: bad labels: sample {i} names a concept with {name!r:.80}")
            if name not in known:
                fragments += 1
                if fragments > MAX_FRAGMENT_LABELS:
                    raise FeatureFileError(f"{what}: bad labels: more than {MAX_FRAGMENT_LABELS} names that are not "
                                           "concepts of the vocabulary; write the full concept names")
                try:
                    known[name] = vocab.resolve(name)
                except VocabularyError as e:
                    raise FeatureFileError(f"{what}: bad labels: sample {i}: {e}") from e
    return labels


def _read_manifest(folder: Path) -> dict:
    try:
        path = folder / MANIFEST
        if path.stat().st_size > MAX_HEADER_BYTES:
            raise ValueError(f"over {MAX_HEADER_BYTES} bytes")
        doc = loads_json(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc["shards"], list):
            raise TypeError("no list of shards")
        if not all(isinstance(s["file"], str) and _plain_name(s["file"]) for s in doc["shards"]):
            raise ValueError("a shard name leaves the folder")  # checked with `if`: python -O strips asserts
        return doc
    except FileNotFoundError as e:
        raise FeatureFileError(f"{folder} has no {MANIFEST}: it is not a feature-set folder") from e
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise FeatureFileError(f"{folder / MANIFEST} is damaged ({e.__class__.__name__}): "
                               "rebuild it from the shard files or capture again") from e


def _plain_name(name: str) -> bool:
    """A file name that stays in its folder on every platform: no separators, drive, NUL, or leading dot."""
    return bool(name) and not name.startswith(".") and not any(c in name for c in "/\\:\0")
