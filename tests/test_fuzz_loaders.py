"""Untrusted files: truncated, bit-flipped and hand-crafted inputs end in the project's own errors."""
import json
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ssae
from ssae import FeatureFileError, ModelFileError, SSAEError
from ssae.train import PRESETS

from builders import make_features

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    feats = make_features(d / "f.safetensors", n_features=8, repeats=1)
    model = ssae.train(ssae.load_features(feats), PRESETS["additive"]).ssae.save(d / "m.safetensors")
    return d, feats.read_bytes(), model.read_bytes()


def load_model(path):
    ssae.SSAE.load(path).compose({"blond": 1.0})


def load_features(path):
    ssae.load_features(path).load()


def check(tmp, data: bytes, loader):
    """The file loads, or fails with one of the project's errors; anything else fails the test."""
    path = tmp / "case.safetensors"
    path.write_bytes(data)
    try:
        loader(path)
    except SSAEError:
        pass


def damage(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    """The file cut short by `cut` bytes (two times in three), then with the given bits flipped."""
    out = bytearray(data[: max(0, len(data) - cut)] if cut % 3 else data)
    for pos, bit in flips:
        if out:
            out[pos % len(out)] ^= 1 << bit
    return bytes(out)


@SETTINGS
@given(cut=st.integers(min_value=0, max_value=10_000), flips=st.lists(st.tuples(st.integers(0, 10_000),
                                                                                  st.integers(0, 7)), max_size=4))
def test_damaged_model_files(files, cut, flips):
    d, _, model = files
    check(d, damage(model, cut, flips), load_model)


@SETTINGS
@given(cut=st.integers(min_value=0, max_value=5_000), flips=st.lists(st.tuples(st.integers(0, 5_000),
                                                                                 st.integers(0, 7)), max_size=4))
def test_damaged_feature_files(files, cut, flips):
    d, feats, _ = files
    check(d, damage(feats, cut, flips), load_features)


def header_file(entries: dict, meta: dict | None = None, data: bytes = b"\x00" * 64) -> bytes:
    h = dict(entries)
    if meta is not None:
        h["__metadata__"] = meta
    raw = json.dumps(h).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize("entries, meta", [
    ({"features": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 64]}}, {}),
    ({"features": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 64]}}, {}),
    ({"features": {"dtype": "F32", "shape": [2.5, 4], "data_offsets": [0, 64]}}, {}),
    ({"features": {"dtype": "Q99", "shape": [4, 4], "data_offsets": [0, 64]}}, {}),
    ({"features": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 6400]}}, {}),
    ({"a": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]},
      "b": {"dtype": "F32", "shape": [2, 4], "data_offsets": [32, 64]}}, {}),
    ({"features": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}, {"ssae.labels": 5}),
    ({"features": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}},
     {"ssae.vocabulary": json.dumps({"c": ["x"] * 3}), "ssae.labels": "[]"}),
    ({"features": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}},
     {"ssae.vocabulary": json.dumps({"c": ["x", "y"]}), "ssae.labels": json.dumps([["x"]] * 4),
      "ssae.feature_shape": "[5]"}),
    ({"features": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}},
     {"ssae.format": "ssae/1", "ssae.vocabulary": json.dumps({"c": [f"x{i}" for i in range(200_000)]})}),
])
def test_hand_crafted_headers(tmp_path, entries, meta):
    data = header_file(entries, meta)
    for loader, error in ((load_features, FeatureFileError), (load_model, ModelFileError)):
        with pytest.raises(error):
            (tmp_path / "h.safetensors").write_bytes(data)
            loader(tmp_path / "h.safetensors")


def test_header_length_over_the_cap_is_refused_unread(tmp_path):
    (tmp_path / "big.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(ModelFileError, match="declares a"):
        ssae.SSAE.load(tmp_path / "big.safetensors")


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", ".hidden.safetensors"])
def test_manifest_cannot_point_outside_its_folder(tmp_path, shard):
    folder = tmp_path / "set"
    ssae.append_features(folder, torch.zeros(1, 3), ssae.Vocabulary({"c": ["x"]}), [["x"]])
    doc = json.loads((folder / "manifest.json").read_text())
    doc["shards"][0]["file"] = shard
    (folder / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(FeatureFileError, match="damaged"):
        ssae.load_features(folder)
