import json
import struct

import pytest
import torch
from safetensors.torch import save_file

import ssae
from ssae import FeatureFileError, VocabularyError

from builders import VOCAB, make_features


def test_round_trip_keeps_everything(tmp_path):
    path = make_features(tmp_path / "f.safetensors")
    fs = ssae.load_features(path)
    assert len(fs) == 48 and fs.site == "test.site" and fs.n_features == 48 and fs.feature_shape == [48]
    assert fs.prompts[0] == VOCAB.prompt(fs.labels[0]) and set(fs.split) == {"train", "test"}
    x = fs.load()
    assert x.dtype == torch.float32 and x.shape == (48, 48)
    test = fs.indices("test")
    assert torch.equal(fs.load(test), x[test])


def test_half_precision_storage_loads_as_float32(tmp_path):
    a = ssae.load_features(make_features(tmp_path / "a.safetensors", dtype=torch.float32)).load()
    b = ssae.load_features(make_features(tmp_path / "b.safetensors", dtype=torch.bfloat16)).load()
    assert b.dtype == torch.float32 and torch.allclose(a, b, rtol=1e-2, atol=1e-2)


def test_named_parts_feature_shape(tmp_path):
    shape = {"cond": [3, 4], "pooled_output": [5]}
    p = ssae.save_features(tmp_path / "c.safetensors", torch.randn(2, 17), VOCAB, [["blond"], ["boat"]],
                           feature_shape=shape)
    assert ssae.load_features(p).feature_shape == shape
    with pytest.raises(FeatureFileError, match="feature_shape"):
        ssae.save_features(tmp_path / "d.safetensors", torch.randn(2, 16), VOCAB, [["blond"], ["boat"]],
                           feature_shape=shape)


def test_folder_of_shards_appends_in_order_and_checks_agreement(tmp_path):
    folder = tmp_path / "set"
    for i in range(3):
        ssae.append_features(folder, torch.full((2, 5), float(i)), VOCAB, [["blond"], ["boat"]], ["train", "test"])
    fs = ssae.load_features(folder)
    assert len(fs) == 6 and fs.load()[:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json"] + [f"shard-{i:05d}.safetensors" for i in range(3)]
    with pytest.raises(FeatureFileError, match="new folder"):
        ssae.append_features(folder, torch.zeros(1, 6), VOCAB, [["blond"]])


@pytest.mark.parametrize("bad, message", [
    (dict(labels=[["blond"]]), "1 label lists for 2 samples"),
    (dict(features=torch.tensor([[1.0, float("nan")], [0.0, 0.0]])), "sample 0 has NaN"),
    (dict(features=torch.tensor([[1.0, 2.0], [float("inf"), 0.0]])), "sample 1 has NaN or inf"),
    (dict(split=["train", "valid"]), "'train' or 'test'"),
])
def test_bad_input_is_refused_and_leaves_no_file(tmp_path, bad, message):
    kw = dict(features=torch.zeros(2, 2), labels=[["blond"], ["boat"]]) | bad
    with pytest.raises(FeatureFileError, match=message):
        ssae.save_features(tmp_path / "x.safetensors", kw.pop("features"), VOCAB, kw.pop("labels"), **kw)
    assert list(tmp_path.iterdir()) == []


def test_unknown_concept_names_the_known_ones(tmp_path):
    with pytest.raises(VocabularyError, match="known concepts"):
        ssae.save_features(tmp_path / "x.safetensors", torch.zeros(1, 2), VOCAB, [["purple hair"]])


def test_damaged_or_foreign_files_get_clear_errors(tmp_path):
    good = make_features(tmp_path / "good.safetensors")
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(FeatureFileError, match="does not fit the file|damaged"):
        ssae.load_features(tmp_path / "cut.safetensors").load()
    (tmp_path / "noise.safetensors").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(FeatureFileError, match="not a .safetensors file|damaged"):
        ssae.load_features(tmp_path / "noise.safetensors")
    save_file({"features": torch.zeros(2, 3)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(FeatureFileError, match="no 'ssae.vocabulary' metadata"):
        ssae.load_features(tmp_path / "plain.safetensors")
    with pytest.raises(FeatureFileError, match="no feature set"):
        ssae.load_features(tmp_path / "missing.safetensors")


def test_labels_count_mismatch_in_a_file_is_refused(tmp_path):
    meta = {"ssae.vocabulary": VOCAB.to_json(), "ssae.labels": json.dumps([["blond"]])}
    save_file({"features": torch.zeros(2, 3)}, str(tmp_path / "f.safetensors"), metadata=meta)
    with pytest.raises(FeatureFileError, match="1 for 2 samples"):
        ssae.load_features(tmp_path / "f.safetensors")


def test_empty_split_is_an_error_that_names_the_splits(tmp_path):
    p = ssae.save_features(tmp_path / "f.safetensors", torch.zeros(2, 2), VOCAB, [["blond"], ["boat"]])
    with pytest.raises(FeatureFileError, match="'test' split of this feature set is empty"):
        ssae.load_features(p).indices("test")


def test_header_claiming_huge_sizes_is_refused_before_allocation(tmp_path):
    header = json.dumps({"features": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}}).encode()
    (tmp_path / "huge.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 16)
    with pytest.raises(FeatureFileError, match="does not fit"):
        ssae.load_features(tmp_path / "huge.safetensors")
