"""`python -m ssae.world build`: recipe hashing, caching, the files ComfyUI loads, and the local pipeline."""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace

import pytest
import torch

from ssae.safefile import load_tensors, read_header
from ssae.world.__main__ import main
from ssae.world.build import FILES, WorldError, build, load_world
from ssae.world.dit import DiTRecipe, comfy_state_dict, make_transformer, train_dit
from ssae.world.pipeline import LocalWorld, load_transformer
from ssae.world.recipe import QUICK, WorldRecipe, recipe_for
from ssae.world.scene import PAPER

for module in ("diffusers", "transformers", "instant_clip_tokenizer"):  # the world's models are imported lazily
    pytest.importorskip(module, reason="building the world needs its extra: pip install -e '.[world]'")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return build(root, QUICK, progress=False)


def test_hashes_follow_dependencies():
    base = WorldRecipe().hashes()
    assert base == WorldRecipe.from_dict(json.loads(json.dumps(WorldRecipe().to_dict()))).hashes()
    text = WorldRecipe(text_seed=1).hashes()
    assert text["text"] != base["text"] and text["dit"] != base["dit"] and text["autoencoder"] == base["autoencoder"]
    dit = replace(WorldRecipe(), dit=DiTRecipe(steps=10)).hashes()
    assert dit["dit"] != base["dit"] and {dit["text"], dit["autoencoder"]} == {base["text"], base["autoencoder"]}
    world = WorldRecipe(heldout_pairs=3).hashes()
    assert world["autoencoder"] != base["autoencoder"] and world["text"] == base["text"]


def test_unknown_recipe_keys_are_ignored_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        r = WorldRecipe.from_dict({"images": 12, "colour_depth": 8, "dit": {"depth": 3, "wings": 2}})
    assert r.images == 12 and r.dit.depth == 3 and "colour_depth" in caplog.text and "wings" in caplog.text


def test_quick_build_writes_what_comfyui_loads(quick):
    root = quick.root
    for rel in FILES.values():
        assert (root / "models" / rel).is_file(), rel
    doc = json.loads((root / "world.json").read_text())
    assert doc["hash"] == quick.hashes["world"] and doc["comfy"]["vae_name"] == "taesd3"
    assert doc["heldout_pairs"] and len(doc["train"]) + len(doc["test"]) == 192
    assert "base_path: " + str((root / "models").resolve()) in (root / "extra_model_paths.yaml").read_text()
    clip = load_tensors(quick.path("text_encoder"))
    assert clip["text_model.final_layer_norm.weight"].dtype == torch.float16
    dit = load_tensors(quick.path("diffusion_model"))
    # diffusers' SD3 layout, which ComfyUI converts; hidden = 64 * depth; SD3's context and pooled widths
    assert dit["pos_embed.proj.weight"].shape[0] == 128 and "transformer_blocks.1.attn.add_q_proj.weight" in dit
    assert dit["context_embedder.weight"].shape == (128, 4096)
    assert dit["time_text_embed.text_embedder.linear_1.weight"].shape == (128, 2048)
    assert "transformer_blocks.0.attn2.to_q.weight" in dit, "MMDiT-X dual attention in block 0"
    enc = load_tensors(quick.path("vae_encoder"))
    dec = load_tensors(quick.path("vae_decoder"))
    assert enc["14.weight"].shape == (16, 64, 3, 3) and dec["1.weight"].shape == (64, 16, 3, 3)
    assert read_header(quick.path("vae_decoder"))[1]["ssae.world.hash"] == quick.hashes["autoencoder"]


def test_rebuild_is_a_noop_and_a_changed_recipe_rebuilds_only_what_depends_on_it(quick, tmp_path):
    root = shutil.copytree(quick.root, tmp_path / "w")
    stamp = lambda: {k: (root / "models" / v).stat().st_mtime_ns for k, v in FILES.items()}  # noqa: E731
    before = stamp()
    again = build(root, QUICK, progress=False)
    assert stamp() == before and again.hashes == quick.hashes
    changed = build(root, replace(QUICK, dit=replace(QUICK.dit, steps=4)), progress=False)
    after = stamp()
    assert after["diffusion_model"] != before["diffusion_model"]
    assert {k: after[k] for k in ("text_encoder", "vae_encoder", "vae_decoder")} == \
           {k: before[k] for k in ("text_encoder", "vae_encoder", "vae_decoder")}
    assert changed.hashes["world"] != quick.hashes["world"]
    assert json.loads((root / "world.json").read_text())["hash"] == changed.hashes["world"]
    (root / "models" / FILES["vae_decoder"]).write_bytes(b"damaged")
    build(root, QUICK, progress=False)
    assert load_tensors(root / "models" / FILES["vae_decoder"])["19.weight"].shape == (3, 64, 3, 3)


def test_load_world_round_trip_and_errors(quick, tmp_path):
    loaded = load_world(quick.root)
    assert loaded.hashes == quick.hashes and loaded.world == quick.world and loaded.recipe == QUICK
    with pytest.raises(WorldError, match="python -m ssae.world build"):
        load_world(tmp_path)


def test_local_pipeline_samples_images(quick):
    local = LocalWorld(quick)
    prompts = [quick.world.prompt(c) for c in quick.world.train_combinations[:2]]
    a = local.sample(prompts, [1, 2])
    assert a.shape == (2, 64, 64, 3) and a.dtype.name == "uint8"
    assert (local.sample(prompts, [1, 2]) == a).all()


def test_dit_weights_round_trip_through_comfys_widths():
    recipe = DiTRecipe(depth=2, steps=2, batch=2)
    g = torch.Generator().manual_seed(0)
    latents, labels = torch.randn(4, 16, 8, 8, generator=g), torch.tensor([0, 1, 0, 1])
    hidden, pooled = torch.randn(2, 77, 768, generator=g), torch.randn(2, 768, generator=g)
    model = train_dit(latents, labels, hidden, pooled, (hidden[0], pooled[0]), recipe)
    sd = comfy_state_dict(model)
    assert sd["context_embedder.weight"][:, 768:].abs().max() == 0
    fresh = make_transformer(recipe)
    assert not torch.equal(fresh.state_dict()["proj_out.weight"], model.state_dict()["proj_out.weight"])


def test_load_transformer_refuses_a_model_that_reads_past_clip_l(tmp_path):
    from ssae.safefile import atomic_save
    recipe = DiTRecipe(depth=2)
    sd = comfy_state_dict(make_transformer(recipe))
    atomic_save(sd, {}, tmp_path / "ok.safetensors")
    torch.testing.assert_close(load_transformer(tmp_path / "ok.safetensors", recipe).state_dict()["proj_out.weight"],
                               sd["proj_out.weight"])
    sd["context_embedder.weight"][:, 1000] = 1.0
    atomic_save(sd, {}, tmp_path / "bad.safetensors")
    with pytest.raises(WorldError, match="768"):
        load_transformer(tmp_path / "bad.safetensors", recipe)


def test_cli_build_quick(quick, tmp_path, capsys):
    root = shutil.copytree(quick.root, tmp_path / "w")
    assert main(["--threads", "1", "build", str(root), "--quick", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert quick.hashes["world"] in out and str(root / "extra_model_paths.yaml") in out
    assert main(["probe", str(tmp_path / "none"), "--url", "http://127.0.0.1:9"]) == 2
    assert "python -m ssae.world build" in capsys.readouterr().err


def test_cli_build_depth_rebuilds_only_the_mmdit(quick, tmp_path, capsys):
    root = shutil.copytree(quick.root, tmp_path / "w")
    before = {p.name: p.stat().st_mtime_ns for p in (root / "models").rglob("*.safetensors")}
    assert main(["--threads", "1", "build", str(root), "--quick", "--depth", "3", "--no-progress"]) == 0
    assert quick.hashes["world"] not in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in (root / "models").rglob("*.safetensors")}
    assert {name for name in before if after[name] != before[name]} == {"world_mmdit.safetensors"}
    blocks = {k.split(".")[1] for k in read_header(root / "models/diffusion_models/world_mmdit.safetensors",
                                                  WorldError)[0] if k.startswith("transformer_blocks.")}
    assert blocks == {"0", "1", "2"}
    with pytest.raises(SystemExit):
        main(["build", str(root), "--depth", "0"])
    assert "joint blocks >= 1" in capsys.readouterr().err


def test_the_first_worlds_hashes_are_unchanged():
    """Its cache (the host tests' world) stays valid: the second world's choices did not enter its hashes."""
    assert WorldRecipe().hashes() == {"text": "3f1f4e2039d31f71", "autoencoder": "e78faf1ef05760b6",
                                      "dit": "d7c6d2321544f377", "world": "09462179a2195194"}
    assert QUICK.hashes()["world"] == "5fb803ad79134033"


def test_the_paper_world_caches_apart_and_shares_the_text_encoder():
    first, paper = WorldRecipe().hashes(), recipe_for("paper").hashes()
    assert paper["text"] == first["text"]
    assert paper["autoencoder"] != first["autoencoder"] and paper["dit"] != first["dit"]
    assert recipe_for("paper", quick=True).hashes()["world"] not in (paper["world"], QUICK.hashes()["world"])
    with pytest.raises(ValueError, match="unknown world"):
        recipe_for("mars")


def test_cli_build_paper_world(quick, tmp_path, capsys):
    """--world paper builds the second world beside the first; the text encoder file of the same seed is reused."""
    root = tmp_path / "paper"
    (root / "models" / "text_encoders").mkdir(parents=True)
    shutil.copy(quick.path("text_encoder"), root / "models" / FILES["text_encoder"])
    stamp = (root / "models" / FILES["text_encoder"]).stat().st_mtime_ns
    assert main(["--threads", "1", "build", str(root), "--world", "paper", "--quick", "--no-progress"]) == 0
    assert (root / "models" / FILES["text_encoder"]).stat().st_mtime_ns == stamp
    loaded = load_world(root)
    assert loaded.recipe.world == "paper" and loaded.world.spec is PAPER and loaded.recipe == recipe_for("paper", True)
    doc = json.loads((root / "world.json").read_text())
    assert doc["world"] == "paper" and len(doc["train"]) + len(doc["test"]) == 720
    assert set(map(tuple, doc["heldout_pairs"])) == set(loaded.world.heldout_pairs)
    with pytest.raises(SystemExit):
        main(["build", str(root), "--world", "mars"])
    assert "invalid choice" in capsys.readouterr().err
