"""ssae.store: feature-set files and shard folders, their metadata, and the errors for bad input."""
import json

import pytest
import torch
from builders import HELDOUT, VOCAB, make_features
from safetensors import safe_open
from safetensors.torch import save_file

import ssae
import ssae.safefile
from ssae import FeatureFileError, VocabularyError
from ssae.shapes import n_features_of

TWO = [["blond"], ["boat"]]


def metadata_of(path) -> dict:
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_round_trip_keeps_features_labels_split_prompts_and_site(tmp_path):
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    labels = [["blond", "boat"], ["brunette"], [], ["hat", "left"], ["market"]]
    split = ["train", "test", "train", "train", "test"]
    prompts = [f"prompt {i}" for i in range(5)]
    p = ssae.save_features(tmp_path / "f.safetensors", x, VOCAB, labels, split, prompts, site="sd35.block3",
                           feature_shape=[2, 3])
    fs = ssae.load_features(p)
    assert torch.equal(fs.load(), x)
    assert fs.labels[0] == ["A blond girl", "on a boat"] and fs.labels[2] == [], "fragments are stored resolved"
    assert fs.labels[3] == ["and a hat", "looking to the left"]
    assert fs.split == split and fs.prompts == prompts and fs.site == "sd35.block3"
    assert fs.feature_shape == [2, 3] and fs.n_features == 6 and len(fs) == 5 and fs.vocabulary == VOCAB
    assert fs.indices("test").tolist() == [1, 4] and fs.indices("train").tolist() == [0, 2, 3]
    assert torch.equal(fs.load(torch.tensor([4, 1])), x[[4, 1]]), "rows come back in the order asked for"
    assert torch.equal(fs.mask(torch.tensor([0])), VOCAB.mask([labels[0]]))


def test_builder_file_round_trip(tmp_path):
    path = make_features(tmp_path / "f.safetensors")
    fs = ssae.load_features(path)
    assert len(fs) == 48 and fs.site == "test.site" and fs.n_features == 48 and fs.feature_shape == [48]
    assert fs.prompts[0] == VOCAB.prompt(fs.labels[0])
    for labels, s in zip(fs.labels, fs.split):
        assert any(set(p) <= set(labels) for p in HELDOUT) == (s == "test")


def test_unsplit_set_is_all_train(make_set):
    fs = make_set(heldout=None)
    assert fs.split is None and fs.indices("train").tolist() == list(range(len(fs)))
    with pytest.raises(FeatureFileError, match="'test' split of this feature set is empty"):
        fs.indices("test")
    with pytest.raises(FeatureFileError, match="unknown split 'valid'"):
        fs.indices("valid")


def test_named_parts_feature_shape(tmp_path):
    shape = {"cond": [3, 4], "pooled": [5]}
    assert n_features_of(shape) == 17 and n_features_of([3, 4]) == 12
    p = ssae.save_features(tmp_path / "c.safetensors", torch.randn(2, 17), VOCAB, TWO, feature_shape=shape)
    fs = ssae.load_features(p)
    assert fs.feature_shape == shape and fs.n_features == 17
    assert list(fs.feature_shape) == ["cond", "pooled"], "part order is kept"
    with pytest.raises(FeatureFileError, match="feature_shape .* has 17 values, but each sample has 16"):
        ssae.save_features(tmp_path / "d.safetensors", torch.randn(2, 16), VOCAB, TWO, feature_shape=shape)


def test_features_of_more_dimensions_are_flattened(tmp_path):
    x = torch.randn(2, 3, 4)
    fs = ssae.load_features(ssae.save_features(tmp_path / "f.safetensors", x, VOCAB, TWO, feature_shape=[3, 4]))
    assert torch.equal(fs.load(), x.reshape(2, 12))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_storage_loads_as_float32(tmp_path, dtype):
    a = ssae.load_features(make_features(tmp_path / "a.safetensors")).load()
    p = make_features(tmp_path / "b.safetensors", dtype=dtype)
    with safe_open(str(p), "pt") as f:
        assert f.get_slice("features").get_dtype() == {torch.float16: "F16", torch.bfloat16: "BF16"}[dtype]
    b = ssae.load_features(p).load()
    assert b.dtype == torch.float32 and torch.allclose(a, b, rtol=1e-2, atol=2e-2)


def test_folder_of_shards_appends_in_order(tmp_path):
    folder = tmp_path / "set"
    for i, place in enumerate(["boat", "beach", "market"]):
        ssae.append_features(folder, torch.full((2, 5), float(i)), VOCAB, [["blond"], [place]], ["train", "test"],
                             [f"p{i}a", f"p{i}b"], site="s")
    fs = ssae.load_features(folder)
    assert len(fs) == 6 and fs.load()[:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert fs.split == ["train", "test"] * 3 and fs.prompts == ["p0a", "p0b", "p1a", "p1b", "p2a", "p2b"]
    assert [lab[0] for lab in fs.labels[1::2]] == ["on a boat", "at the beach", "at a market"]
    assert fs.indices("test").tolist() == [1, 3, 5] and fs.load(fs.indices("test"))[:, 0].tolist() == [0, 1, 2]
    shards = [f"shard-{i:05d}.safetensors" for i in range(3)]
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json"] + shards
    assert json.loads((folder / "manifest.json").read_text())["n_features"] == 5
    assert ssae.count_samples(folder) == 6 == len(fs)


def test_count_samples_reads_the_manifest_alone(tmp_path):
    """The count a capture queue prints after each save opens no shard, and refuses a damaged manifest."""
    folder = tmp_path / "set"
    for n in (1, 3, 2):
        ssae.append_features(folder, torch.zeros(n, 4), VOCAB, [["blond"]] * n)
    (folder / "shard-00001.safetensors").write_bytes(b"not a shard")  # would fail load_features
    assert ssae.count_samples(folder) == 6
    doc = json.loads((folder / "manifest.json").read_text())
    for bad in ("3", None, 0, True):
        doc["shards"][1]["n"] = bad
        (folder / "manifest.json").write_text(json.dumps(doc))
        with pytest.raises(FeatureFileError, match="damaged"):
            ssae.count_samples(folder)
    with pytest.raises(FeatureFileError, match="no manifest.json"):
        ssae.count_samples(tmp_path)


def test_append_skips_a_shard_that_lost_its_manifest_entry(tmp_path):
    folder = tmp_path / "set"
    ssae.append_features(folder, torch.zeros(1, 3), VOCAB, [["blond"]])
    # a shard whose manifest entry a crash lost
    ssae.save_features(folder / "shard-00001.safetensors", torch.ones(1, 3), VOCAB, [["blond"]])
    ssae.append_features(folder, torch.full((1, 3), 2.0), VOCAB, [["brunette"]])
    fs = ssae.load_features(folder)
    assert [p.name for p in fs.shards] == ["shard-00000.safetensors", "shard-00002.safetensors"]
    assert fs.load()[:, 0].tolist() == [0.0, 2.0]


@pytest.mark.parametrize("kw, message", [
    (dict(features=torch.zeros(1, 6)), "size 5.*size 6.*new folder"),
    (dict(site="other.site"), "site 's'.*site 'other.site'.*new folder"),
    (dict(vocabulary=ssae.Vocabulary({"c": ["A blond girl"]})), "another vocabulary"),
])
def test_append_that_disagrees_with_the_folder_is_refused(tmp_path, kw, message):
    folder = tmp_path / "set"
    ssae.append_features(folder, torch.zeros(1, 5), VOCAB, [["blond"]], site="s")
    args = dict(features=torch.zeros(1, 5), vocabulary=VOCAB, labels=[["blond"]], site="s") | kw
    with pytest.raises(FeatureFileError, match=message):
        ssae.append_features(folder, **args)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "shard-00000.safetensors"]
    assert len(ssae.load_features(folder)) == 1


@pytest.mark.parametrize("bad, message", [
    (dict(labels=[["blond"]]), "1 label lists for 2 samples"),
    (dict(features=torch.tensor([[1.0, float("nan")], [0.0, 0.0]])), "sample 0 has NaN"),
    (dict(features=torch.tensor([[1.0, 2.0], [float("inf"), 0.0]])), "sample 1 has NaN or inf"),
    (dict(features=torch.zeros(0, 2), labels=[]), "N > 0"),
    (dict(features=torch.zeros(2, 2, dtype=torch.int32)), "floating point"),
    (dict(split=["train", "valid"]), "'train' or 'test'"),
    (dict(split=["train"]), "1 split entries for 2 samples"),
    (dict(prompts=["a", "b", "c"]), "3 prompts entries for 2 samples"),
])
def test_bad_input_is_refused_and_leaves_no_file(tmp_path, bad, message):
    kw = dict(features=torch.zeros(2, 2), labels=TWO) | bad
    with pytest.raises(FeatureFileError, match=message):
        ssae.save_features(tmp_path / "x.safetensors", kw.pop("features"), VOCAB, kw.pop("labels"), **kw)
    assert list(tmp_path.iterdir()) == []


def test_unknown_concept_names_the_known_ones(tmp_path):
    with pytest.raises(VocabularyError, match="unknown concept 'purple hair'.*known concepts.*A blond girl"):
        ssae.save_features(tmp_path / "x.safetensors", torch.zeros(1, 2), VOCAB, [["purple hair"]])
    assert list(tmp_path.iterdir()) == []
    meta = {"ssae.vocabulary": VOCAB.to_json(), "ssae.labels": json.dumps([["purple hair"]])}
    save_file({"features": torch.zeros(1, 2)}, str(tmp_path / "f.safetensors"), metadata=meta)
    with pytest.raises(FeatureFileError, match="bad labels.*purple hair"):
        ssae.load_features(tmp_path / "f.safetensors")


def test_a_failed_write_leaves_neither_partial_nor_temp_files(tmp_path, monkeypatch):
    def broken(tensors, filename, metadata=None):
        open(filename, "wb").write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ssae.safefile, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        ssae.save_features(tmp_path / "x.safetensors", torch.zeros(2, 2), VOCAB, TWO)
    with pytest.raises(OSError, match="disk full"):
        ssae.append_features(tmp_path / "set", torch.zeros(2, 2), VOCAB, TWO)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def nan_file(tmp_path, bad_row: int, n: int = 6):
    """A feature file written around ssae's checks, with NaN in one row."""
    good = ssae.save_features(tmp_path / "good.safetensors", torch.zeros(n, 2), VOCAB, [["blond"]] * n)
    x = torch.zeros(n, 2)
    x[bad_row, 1] = float("nan")
    save_file({"features": x}, str(tmp_path / "nan.safetensors"), metadata=metadata_of(good))
    return ssae.load_features(tmp_path / "nan.safetensors")


def test_nan_in_a_stored_file_is_found_on_load_and_names_the_sample(tmp_path):
    fs = nan_file(tmp_path, bad_row=4)  # opening reads metadata only
    with pytest.raises(FeatureFileError, match="sample 4 has NaN"):
        fs.load()


def test_nan_message_names_the_sample_when_loading_a_subset_of_rows(tmp_path):
    fs = nan_file(tmp_path, bad_row=4)
    assert torch.equal(fs.load(torch.tensor([0, 1])), torch.zeros(2, 2))
    with pytest.raises(FeatureFileError, match="sample 4 has NaN"):
        fs.load(torch.tensor([0, 4]))  # the bad row is sample 4 of the file, position 1 of the request


def test_nan_message_names_the_sample_across_shards(tmp_path):
    folder = tmp_path / "set"
    ssae.append_features(folder, torch.zeros(3, 2), VOCAB, [["blond"]] * 3)
    ssae.append_features(folder, torch.zeros(3, 2), VOCAB, [["blond"]] * 3)
    x = torch.zeros(3, 2)
    x[2, 0] = float("inf")
    shard = folder / "shard-00001.safetensors"
    save_file({"features": x}, str(shard), metadata=metadata_of(shard))
    with pytest.raises(FeatureFileError, match="sample 5 has NaN or inf"):
        ssae.load_features(folder).load()


def test_missing_metadata(tmp_path):
    save_file({"features": torch.zeros(2, 3)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(FeatureFileError, match="no 'ssae.vocabulary' metadata.*not written by ssae"):
        ssae.load_features(tmp_path / "plain.safetensors")
    save_file({"features": torch.zeros(2, 3)}, str(tmp_path / "nolabels.safetensors"),
              metadata={"ssae.vocabulary": VOCAB.to_json()})
    with pytest.raises(FeatureFileError, match="no 'ssae.labels' metadata"):
        ssae.load_features(tmp_path / "nolabels.safetensors")
    save_file({"other": torch.zeros(2, 3)}, str(tmp_path / "nofeatures.safetensors"))
    with pytest.raises(FeatureFileError, match="no 2-D 'features' tensor.*other"):
        ssae.load_features(tmp_path / "nofeatures.safetensors")


def test_labels_count_mismatch_in_a_file_is_refused(tmp_path):
    meta = {"ssae.vocabulary": VOCAB.to_json(), "ssae.labels": json.dumps([["blond"]])}
    save_file({"features": torch.zeros(2, 3)}, str(tmp_path / "f.safetensors"), metadata=meta)
    with pytest.raises(FeatureFileError, match="1 for 2 samples"):
        ssae.load_features(tmp_path / "f.safetensors")


@pytest.mark.parametrize("key, value, message", [
    ("ssae.format", "ssae-features/9", "format 'ssae-features/9'.*upgrade"),
    ("ssae.split", json.dumps(["train", "valid"] * 24), "'train' or 'test'"),
    ("ssae.split", json.dumps(["train"]), "one entry per sample"),
    ("ssae.feature_shape", "[7]", "does not match 48 features"),
    ("ssae.labels", "[[", "'ssae.labels' is not valid JSON"),
    ("ssae.vocabulary", json.dumps({"a": ["x"], "b": ["x"]}), "bad vocabulary metadata"),
])
def test_bad_metadata_in_a_file_is_refused(tmp_path, key, value, message):
    good = make_features(tmp_path / "good.safetensors")
    with safe_open(str(good), "pt") as f:
        x = f.get_tensor("features")
    save_file({"features": x}, str(tmp_path / "bad.safetensors"), metadata=metadata_of(good) | {key: value})
    with pytest.raises(FeatureFileError, match=message):
        ssae.load_features(tmp_path / "bad.safetensors")


def test_truncated_and_foreign_files(tmp_path):
    good = make_features(tmp_path / "good.safetensors")
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(FeatureFileError, match="cut.safetensors.*does not fit the file"):
        ssae.load_features(tmp_path / "cut.safetensors")
    (tmp_path / "noise.safetensors").write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator()
                                                               .manual_seed(0), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(FeatureFileError, match="noise.safetensors.*not a .safetensors file"):
        ssae.load_features(tmp_path / "noise.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(b"\x01")
    with pytest.raises(FeatureFileError, match="too short"):
        ssae.load_features(tmp_path / "tiny.safetensors")
    with pytest.raises(FeatureFileError, match="no feature set at"):
        ssae.load_features(tmp_path / "missing.safetensors")


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeatureFileError, match="no manifest.json"):
        ssae.load_features(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{")
    with pytest.raises(FeatureFileError, match="manifest.json is damaged"):
        ssae.load_features(tmp_path / "bad")
    folder = tmp_path / "set"
    ssae.append_features(folder, torch.zeros(1, 3), VOCAB, [["blond"]])
    (folder / "shard-00000.safetensors").unlink()
    with pytest.raises(FeatureFileError, match="cannot read"):
        ssae.load_features(folder)


def test_a_shard_without_a_split_does_not_leak_held_out_rows_into_training(tmp_path):
    """Shard 0 holds a 'test' row; appending a shard with no split must not turn that row into training data."""
    folder = tmp_path / "set"
    ssae.append_features(folder, torch.zeros(2, 3), VOCAB, TWO, ["train", "test"])
    try:
        ssae.append_features(folder, torch.ones(2, 3), VOCAB, TWO)  # no split given
        fs = ssae.load_features(folder)
    except FeatureFileError:
        return  # refusing the mixed folder is a fine answer too
    assert 1 not in fs.indices("train").tolist(), "the held-out row of shard 0 is trained on"


def test_replace_swaps_in_a_new_set_and_a_failed_write_keeps_the_old(tmp_path):
    folder = tmp_path / "sets" / "portraits"
    for _ in range(2):
        ssae.append_features(folder, torch.ones(2, 3), VOCAB, [["blond"], ["boat"]])
    assert ssae.count_samples(folder) == 4
    ssae.store.replace_features(folder, torch.zeros(3, 3), VOCAB, [["hat"]] * 3, ["test"] * 3)
    fs = ssae.load_features(folder)
    assert len(fs) == 3 and torch.equal(fs.load(), torch.zeros(3, 3)) and fs.split == ["test"] * 3
    with pytest.raises(FeatureFileError, match="NaN"):
        ssae.store.replace_features(folder, torch.full((1, 3), float("nan")), VOCAB, [["hat"]])
    assert torch.equal(ssae.load_features(folder).load(), torch.zeros(3, 3)), "the old set is untouched"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["portraits"], "no staging folders are left behind"
    ssae.store.replace_features(tmp_path / "fresh", torch.ones(1, 3), VOCAB, [["hat"]])
    assert ssae.count_samples(tmp_path / "fresh") == 1
