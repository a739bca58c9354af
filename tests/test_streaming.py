"""Out-of-core training: the gram solver reads the rows from the shards one column block per pass and
gives the model that in-memory training gives."""
import sys

import pytest
import torch
from builders import VOCAB, make_features
from safetensors.torch import save_file

import ssae
from ssae.errors import SSAEError
from ssae.presets import PRESETS, with_overrides
from ssae.safefile import read_header

ROWS = sys.modules["ssae.rows"]


@pytest.fixture
def sharded(tmp_path):
    """The builder's set re-written as a folder of uneven shards (the layout capture produces)."""
    src = ssae.load_features(make_features(tmp_path / "one.safetensors", n_features=70))
    x = src.load()
    folder = tmp_path / "set"
    for a, b in ((0, 5), (5, 6), (6, 30), (30, len(src))):
        ssae.append_features(folder, x[a:b], VOCAB, src.labels[a:b], split=src.split[a:b], site=src.site)
    return ssae.load_features(folder)


def test_column_blocks_hold_the_chosen_rows_and_columns(sharded):
    rows = sharded.indices("train")[torch.randperm(len(sharded.indices("train")), generator=torch.Generator()
                                                   .manual_seed(0))]  # any order, across shards
    whole = sharded.load(rows)
    blocks = list(sharded.column_blocks(rows, block=16, cols=(3, 70)))
    assert [a for a, _ in blocks] == [3, 19, 35, 51, 67]
    assert torch.equal(torch.cat([x for _, x in blocks], 1), whole[:, 3:])


@pytest.mark.parametrize("preset", ["default", "additive"])
def test_streamed_training_gives_the_in_memory_model(sharded, preset):
    recipe = with_overrides(PRESETS[preset], epochs=None if preset == "additive" else 25)
    held = ssae.train(sharded, with_overrides(recipe, stream=False))
    streamed = ssae.train(sharded, with_overrides(recipe, stream=True))
    assert [h["loss"] for h in streamed.history] == pytest.approx([h["loss"] for h in held.history], abs=1e-6)
    for name, t in held.ssae.model.state_dict().items():
        assert torch.allclose(t, streamed.ssae.model.state_dict()[name], atol=1e-5), name
    assert torch.allclose(held.ssae.compose(["blond", "boat"]), streamed.ssae.compose(["blond", "boat"]), atol=1e-4)


def test_streaming_is_chosen_when_the_rows_would_not_fit(sharded, monkeypatch):
    reads = []
    real = type(sharded).column_blocks
    monkeypatch.setattr(type(sharded), "column_blocks", lambda *a, **k: reads.append(1) or real(*a, **k))
    monkeypatch.setattr(ROWS, "free_memory", lambda dev: 1 << 40)
    ssae.train(sharded, PRESETS["additive"])
    assert not reads, "rows that fit are held in memory"
    monkeypatch.setattr(ROWS, "free_memory", lambda dev: 1000)
    ssae.train(sharded, PRESETS["additive"])
    assert reads, "rows that would fill the memory are streamed"


@pytest.mark.parametrize("preset", ["paper", "paper-ils", "paper-trainable"])
def test_streaming_refuses_what_it_cannot_do(sharded, preset):
    with pytest.raises(SSAEError, match="streaming needs the gram or mean solver"):
        ssae.train(sharded, with_overrides(PRESETS[preset], stream=True, epochs=1))


def test_streaming_names_a_sample_with_nan(tmp_path):
    """NaN written behind ssae's back (appends refuse it) is caught by the streamed pass, naming the sample."""
    folder = tmp_path / "set"
    x = torch.randn(6, 5)
    ssae.append_features(folder, x[:3], VOCAB, [["blond", "boat"]] * 3)
    shard = ssae.append_features(folder, x[3:], VOCAB, [["brunette", "beach"]] * 3)
    x[4, 2] = float("nan")
    save_file({"features": x[3:]}, str(shard), metadata=read_header(shard)[1])
    fs = ssae.load_features(folder)
    with pytest.raises(ssae.FeatureFileError, match="sample 4 has NaN"):
        list(fs.column_blocks(block=2))
