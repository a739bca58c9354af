"""Every node's define_schema() and execute() in CI, against ComfyUI's stand-ins (tests/comfy_stubs): the paper's
loop at the conditioning and at a joint block, one node after another as a graph runs them, with the model sampled
by a driver that calls it as ComfyUI does (batched or split CFG passes). The real host tests (tests/host) keep
what needs ComfyUI itself."""
import asyncio
import functools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from builders import VOCAB

from ssae.promptset import LabelledPrompt

WIDTH, POOLED, HIDDEN = 2048 + 16, 8, 32  # conditioning wider than SD3's CLIP channels: CLIP and T5 rows differ
SWAP = json.dumps({"add": {"brunette": 1}, "remove": {"blond": 1}})


@pytest.fixture(scope="module")
def host(fake_comfy):
    """The extension loaded as ComfyUI loads it (its entry point registers the model folder and the route), the
    node classes, and the stand-ins' helpers."""
    import folder_paths
    import server
    from comfy_stubs import graph

    from nodes.extension import comfy_entrypoint
    extension = asyncio.run(comfy_entrypoint())
    nodes = {cls.__name__: cls for cls in asyncio.run(extension.get_node_list())}
    return SimpleNamespace(nodes=nodes, run=graph.run_node, ui=graph.ui_text, check=graph.check_schema,
                           sampling=fake_comfy, folder_paths=folder_paths, server=server.PromptServer.instance)


@functools.cache
def concept_rows(n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    return torch.randn(VOCAB.n_concepts, n_rows, WIDTH, generator=g) / 4, torch.randn(VOCAB.n_concepts, POOLED,
                                                                                         generator=g)


def encode(concepts, n_clip: int = 77, n_t5: int = 0, noise: float = 0.01, seed: int = 0):
    """A stand-in for CLIP (and T5) Text Encode: CONDITIONING whose rows are a sum of per-concept rows (CLIP rows
    zero beyond channel 2048, as SD3's), plus a pooled vector, so that an SSAE can learn the concepts."""
    rows, pooled = concept_rows(n_clip + n_t5)
    m = VOCAB.mask([list(concepts)])
    cond = torch.einsum("bk,klc->blc", m, rows)
    cond = cond + noise * torch.randn(cond.shape, generator=torch.Generator().manual_seed(seed))
    cond[:, :n_clip, 2048:] = 0
    return [[cond, {"pooled_output": m @ pooled}]]


def labelled(concepts, split="train") -> LabelledPrompt:
    return LabelledPrompt(VOCAB, VOCAB.prompt(concepts), tuple(concepts), split)


COMBOS = [list(c) for c in VOCAB.all_combinations()]


def test_every_node_is_exported_with_a_schema_that_matches_execute(host):
    assert sorted(host.nodes) == sorted(["SSAELoader", "SSAESave", "SSAEConceptVector", "SSAEApplyConditioning",
                                          "SSAEPatchModel", "SSAEPromptSet", "SSAECaptureConditioning",
                                          "SSAECaptureFeatures", "SSAESaveFeatures", "SSAETrain",
                                          "SSAEBlockMap"])
    for cls in host.nodes.values():
        host.check(cls)
    assert ("GET", "/ssae/concepts") in host.server.routes.handlers
    assert host.folder_paths.get_folder_paths("ssae"), "the ssae model folder is registered"


def train_and_load(host, features: str, name: str):
    """SSAETrain (closed-form preset) -> SSAESave -> SSAELoader, checking what each shows."""
    n = host.nodes
    out = host.run(n["SSAETrain"], features=features, preset="additive", device="cpu")
    trained, image = out.args
    assert image.ndim == 4 and image.shape[-1] == 3 and "trained additive" in host.ui(out)
    assert any(node == "7" for node, _ in host.server.progress_texts), "progress text on the node"
    saved = host.run(n["SSAESave"], ssae=trained, filename=name)
    assert f"saved {name}.safetensors" in host.ui(saved)
    loaded = host.run(n["SSAELoader"], ssae_name=f"{name}.safetensors")
    assert loaded.args[0].site == trained.site and "feature shape" in host.ui(loaded)
    return loaded.args[0]


def test_the_conditioning_loop_node_by_node(host):
    """Prompt set -> encode -> capture conditioning -> save features -> train -> save -> load -> concepts -> edit and
    compose a conditioning; and the concepts route reading the saved file."""
    n = host.nodes
    out = host.run(n["SSAEPromptSet"], vocabulary=VOCAB.to_json(), prompts=100, heldout_pairs=1)
    prompts, samples = out.args
    assert len(prompts) == len(samples) == len(COMBOS) and "held out" in host.ui(out)
    captured = [host.run(n["SSAECaptureConditioning"], conditioning=encode(s.concepts, 4, 2), sample=s).args[0]
                for s in samples]
    saved = host.run(n["SSAESaveFeatures"], features=captured, name="cond", if_exists="replace")
    assert f"{len(COMBOS)} sample(s) of conditioning" in host.ui(saved)
    model = train_and_load(host, "cond", "cond")
    assert model.feature_shape == {"clip": [4, WIDTH], "t5": [2, WIDTH], "pooled_output": [POOLED]}
    concepts = host.run(n["SSAEConceptVector"], ssae=model, mode="edit", concepts=SWAP)
    assert "edit: +A brunette girl" in host.ui(concepts)
    combo = ["A blond girl", "at the beach", "and a hat", "looking to the left"]
    before, after = encode(combo, 4, 2), encode(["A brunette girl", *combo[1:]], 4, 2)
    out = host.run(n["SSAEApplyConditioning"], concepts=concepts.args[0], strength=1.0, conditioning=before,
                    context=VOCAB.prompt(combo))
    (edited, extra), = out.args[0]
    moved = (edited - before[0][0]).norm() / (after[0][0] - before[0][0]).norm()
    assert float((edited - after[0][0]).norm() / (after[0][0] - before[0][0]).norm()) < 0.05 and moved > 0.9
    assert "warning" not in host.ui(out), "a full context and the SSAE's own layout leave nothing undone"
    mix = host.run(n["SSAEConceptVector"], ssae=model, mode="compose", concepts="blond, beach, hat, left")
    (composed, extra), = host.run(n["SSAEApplyConditioning"], concepts=mix.args[0], strength=1.0).args[0]
    assert composed.shape == before[0][0].shape and extra["pooled_output"].shape == (1, POOLED)
    handler = host.server.routes.handlers[("GET", "/ssae/concepts")]
    from aiohttp import web
    reply = asyncio.run(handler(web.Request({"name": "cond.safetensors"})))
    assert reply.status == 200 and json.loads(reply.text)["categories"] == VOCAB.categories


def test_partial_edits_are_said_on_the_node(host):
    """A CLIP-only SSAE on a conditioning with T5 rows leaves those rows unedited, and a context the vocabulary reads
    only in part edits for a prompt without the rest: both are warnings on the node, not only in a log."""
    n = host.nodes
    captured = [host.run(n["SSAECaptureConditioning"], conditioning=encode(c, 4, 0), sample=labelled(c)).args[0]
                for c in COMBOS]
    host.run(n["SSAESaveFeatures"], features=captured, name="clip_only", if_exists="replace")
    model = train_and_load(host, "clip_only", "clip_only")
    concepts = host.run(n["SSAEConceptVector"], ssae=model, mode="edit", concepts=SWAP).args[0]
    out = host.run(n["SSAEApplyConditioning"], concepts=concepts, strength=1.0,
                    conditioning=encode(COMBOS[0], 4, 2), context="A blond girl on a boat wearing a hat")
    text = host.ui(out)
    assert "all 2 of the conditioning's T5 rows are left unedited: the SSAE was trained without T5 rows" in text
    assert "recognised A blond girl, on a boat; nothing of hat, pose" in text
    assert torch.equal(out.args[0][0][0][:, 4:], encode(COMBOS[0], 4, 2)[0][0][:, 4:]), "the T5 rows as they were"


def sample_with(host, model, positive, negative, passes="batched", **kw):
    return host.sampling.sample(model, host.sampling.Cond(positive[0][0], positive[0][1]["pooled_output"]),
                                 host.sampling.Cond(negative[0][0], negative[0][1]["pooled_output"]), passes=passes,
                                 **kw)


def capture_block(host, site, rows, passes, steps="mean", guidance=(), name="block", combos=COMBOS[:4], **capture):
    """One press of the block loop: SSAECaptureFeatures for a few prompts (`combos`), each sampled (positive prompt of
    `rows` = (CLIP, T5) rows beside a 77 + 77 negative), then SSAESaveFeatures; returns the saved set."""
    import ssae
    n = host.nodes
    model = host.sampling.tiny_model()
    captured, latents = [], []
    negative = encode([], 77, 77)
    for i, c in enumerate(combos):
        m, sample = host.run(n["SSAECaptureFeatures"], model=model, site=site, sample=labelled(c), steps=steps,
                              **capture).args
        latents.append(sample_with(host, m, encode(c, *rows, seed=i), negative, passes, guidance_blocks=guidance))
        captured.append(sample)
    host.run(n["SSAESaveFeatures"], features=captured, samples=latents, name=name, if_exists="replace")
    return ssae.load_features(host.folder_paths.get_output_directory() + f"/ssae_features/{name}")


@pytest.mark.parametrize("site", ["joint_blocks.0.txt", "joint_blocks.1.img"])
def test_block_capture_node_gives_the_same_features_from_split_and_batched_passes(host, site):
    """Issue 19, bug 1: low memory makes ComfyUI run the positive and negative prompts as separate calls."""
    batched = capture_block(host, site, (77, 77), "batched")
    split = capture_block(host, site, (77, 77), "split")
    assert split.feature_shape == batched.feature_shape == (
        {"clip": [77, HIDDEN], "t5": [77, HIDDEN], "vec": [HIDDEN]} if site.endswith("txt") else [HIDDEN])
    torch.testing.assert_close(split.load(), batched.load(), rtol=1e-5, atol=1e-6)


def test_a_guidance_pass_is_not_captured_as_a_step(host):
    """Issue 19, bug 1: SkipLayerGuidance's extra positive pass at each sigma is no sampling step of the prompt."""
    for passes in ("batched", "split"):
        data = capture_block(host, "joint_blocks.0.img", (77, 0), passes, steps="each", guidance=(1,))
        assert len(data) == 3 * 4, "one row per step (3 steps), not per model call"


def test_a_long_prompt_is_captured_as_its_own_rows(host):
    """Issue 19, bugs 1 and 2: a prompt over 75 tokens (154 CLIP + 77 T5 rows) beside a 77 + 77 negative is split,
    or batched repeat-padded to 462 rows; its capture is its own 231 rows with their layout either way."""
    for passes in ("split", "batched"):
        data = capture_block(host, "joint_blocks.0.txt", (154, 77), passes)
        assert data.feature_shape == {"clip": [154, HIDDEN], "t5": [77, HIDDEN], "vec": [HIDDEN]}, passes


class Spy:
    """A block patch that keeps the text stream coming out of `previous` (or the block) per model call."""

    def __init__(self, previous=None):
        self.previous, self.seen = previous, []

    def __deepcopy__(self, memo):
        return self

    def __call__(self, args, extra):
        out = self.previous(args, extra) if self.previous is not None else extra["original_block"](args)
        self.seen.append((list(args["transformer_options"]["cond_or_uncond"]), out["txt"].clone()))
        return out


@pytest.mark.parametrize("shape", [[154, HIDDEN], {"clip": [77, HIDDEN], "t5": [77, HIDDEN]}])
@pytest.mark.parametrize("passes", ["split", "batched"])
def test_a_text_stream_patch_lands_on_the_clip_and_t5_rows_of_a_long_prompt(host, tmp_path, shape, passes):
    """Issue 19, bug 2: an SSAE of 77 CLIP + 77 T5 rows (as a file of the old [154, C] shape or with its layout)
    patched at joint_blocks.0.txt and sampled with a 154 CLIP + 77 T5 prompt: its CLIP part on the first CLIP chunk,
    its T5 part on the T5 rows, the second chunk untouched; on each repetition where the prompt is repeat-padded."""
    import ssae
    from ssae.train import PRESETS
    g = torch.Generator().manual_seed(0)
    x = VOCAB.mask(COMBOS) @ torch.randn(VOCAB.n_concepts, 154 * HIDDEN, generator=g)
    path = ssae.save_features(tmp_path / "txt.safetensors", x, VOCAB, COMBOS, site="joint_blocks.0.txt",
                              feature_shape=shape)
    model = ssae.train(ssae.load_features(path), PRESETS["additive"]).ssae
    delta = model.delta(add=["A brunette girl"], remove=["A blond girl"]).reshape(154, HIDDEN)
    n = host.nodes
    base = host.sampling.tiny_model()
    under = Spy()
    base.set_model_patch_replace(under, "dit", "double_block", 0)
    concepts = host.run(n["SSAEConceptVector"], ssae=model, mode="edit", concepts=SWAP).args[0]
    out = host.run(n["SSAEPatchModel"], model=base, concepts=concepts, strength=1.0, apply_to="both",
                   mode="residual stream")
    patched = out.args[0]
    over = Spy(patched.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 0)])
    patched.set_model_patch_replace(over, "dit", "double_block", 0)
    sample_with(host, patched, encode(COMBOS[0], 154, 77), encode([], 77, 77), passes, steps=1)
    want = {0: torch.cat([delta[:77], torch.zeros(77, HIDDEN), delta[77:]]), 1: delta}  # positive 231, negative 154
    assert len(under.seen) == (1 if passes == "batched" else 2)
    for (chunks, before), (_, after) in zip(under.seen, over.seen):
        for chunk, added in zip(chunks, after - before):
            one = want[chunk]
            torch.testing.assert_close(added, one.repeat(added.shape[0] // one.shape[0], 1), atol=1e-5, rtol=0)


def test_patch_node_says_where_the_edit_lands_and_what_the_context_misses(host, tmp_path):
    import ssae
    from ssae.train import PRESETS
    x = VOCAB.mask(COMBOS) @ torch.randn(VOCAB.n_concepts, HIDDEN, generator=torch.Generator().manual_seed(0))
    path = ssae.save_features(tmp_path / "img.safetensors", x, VOCAB, COMBOS, site="joint_blocks.1.img",
                              feature_shape=[HIDDEN])
    model = ssae.train(ssae.load_features(path), PRESETS["additive"]).ssae
    concepts = host.run(host.nodes["SSAEConceptVector"], ssae=model, mode="edit", concepts=SWAP).args[0]
    out = host.run(host.nodes["SSAEPatchModel"], model=host.sampling.tiny_model(), concepts=concepts,
                    strength=2.0, context="A blond girl on a boat wearing a hat")
    text = host.ui(out)
    assert "joint_blocks.1.img, residual stream, one block: strength 2, added to every token" in text
    assert "nothing of hat, pose" in text


def test_the_layout_wrapper_survives_clones_and_is_added_once(host):
    """Capture then patch then clone (ModelSamplingSD3, a LoRA loader): one layout wrapper, on the clones only."""
    import comfy.patcher_extension as ext
    n = host.nodes
    base = host.sampling.tiny_model()
    captured, _ = host.run(n["SSAECaptureFeatures"], model=base, site="joint_blocks.0.txt",
                            sample=labelled(COMBOS[0])).args
    twice, _ = host.run(n["SSAECaptureFeatures"], model=captured.clone(), site="joint_blocks.1.img",
                         sample=labelled(COMBOS[0])).args
    wrappers = ext.get_all_wrappers(ext.WrappersMP.APPLY_MODEL, twice.clone().clone().model_options, True)
    assert len(wrappers) == 1 and not ext.get_all_wrappers(ext.WrappersMP.APPLY_MODEL, base.model_options, True)


def test_block_input_capture_and_the_default_patch_carry_the_modulation_vector(host):
    """Issue 18: a capture at a block's text input records the stream with the modulation vector; SSAE Patch Model's
    default (the key/value edit carried to every later block, with the vector) patches every block from the site
    on, is the identity at strength 0, and differs from the residual and the one-block edits."""
    import ssae
    from ssae.train import PRESETS
    data = capture_block(host, "joint_blocks.1.txt_in", (77, 0), "batched", name="txt_in")
    assert data.site == "joint_blocks.1.txt_in"
    assert data.feature_shape == {"clip": [77, HIDDEN], "vec": [HIDDEN]}
    model = ssae.train(data, PRESETS["additive"]).ssae
    n = host.nodes
    hat = json.dumps({"add": {"and a baseball cap": 1}, "remove": {"and a hat": 1}})  # both in the 4 captured
    concepts = host.run(n["SSAEConceptVector"], ssae=model, mode="edit", concepts=hat).args[0]
    base = host.sampling.tiny_model()
    positive, negative = encode(COMBOS[0], 77, 0), encode([], 77, 0)
    plain = sample_with(host, base, positive, negative, steps=2)
    outs = {}
    for name, kw in {"default": {}, "zero": {"strength": 0.0}, "residual": {"mode": "residual stream"},
                     "one": {"blocks": "this site"}}.items():
        out = host.run(n["SSAEPatchModel"], model=base, concepts=concepts, **{"strength": 3.0, **kw})
        patched = out.args[0]
        assert set(patched.model_options["transformer_options"]["patches_replace"]["dit"]) == {
            ("double_block", 1), ("double_block", 2)}, name  # the vector reaches block 2 in every mode
        outs[name] = sample_with(host, patched, positive, negative, steps=2)
    assert "modulation vector edited in blocks 1..2" in host.ui(out)
    assert torch.equal(outs["zero"], plain)
    for name in ("default", "residual", "one"):
        assert not torch.allclose(outs[name], plain, atol=1e-4), name
    assert not torch.allclose(outs["default"], outs["residual"], atol=1e-4)
    assert not torch.allclose(outs["default"], outs["one"], atol=1e-4)
    assert "patches_replace" not in base.model_options.get("transformer_options", {}), "the input model is unchanged"


class TextEncoder:
    """CLIP Text Encode's two calls on a CLIP, standing in with `encode`: the conditioning of the concepts the text
    names."""

    def tokenize(self, text: str) -> str:
        return text

    def encode_from_tokens_scheduled(self, tokens: str):
        return encode(VOCAB.parse_labels(tokens), 77, 0)


def test_block_map_reads_how_far_each_edit_moves_the_sample_and_goes_toward_the_edited_prompt(host):
    """Issue 18, the map on any model: SSAEs at three block sites (and a conditioning one the pattern also matches)
    mapped from one prompt. Every sample starts from the same noise; each table entry is what SSAE Patch Model's
    default edit, sampled by hand, does: how far it moves the sample, and how far toward the edited prompt's
    sample (the context with the phrase replaced, through the text encoder); strength 0 moves nothing; what was
    left out and what the context misses are said on the node; the table and heat map are written."""
    import ssae
    from ssae.train import PRESETS
    n = host.nodes
    folder = host.folder_paths.get_folder_paths("ssae")[0]
    sites = ["joint_blocks.1.txt_in", "joint_blocks.0.img", "joint_blocks.0.txt_in"]
    models = {}
    for k, site in enumerate(sites):
        data = capture_block(host, site, (77, 0), "batched", name=f"map_{k}", combos=COMBOS[::2])
        ssae.train(data, PRESETS["additive"]).ssae.save(f"{folder}/map_{k}.safetensors")
        models[site] = ssae.SSAE.load(f"{folder}/map_{k}.safetensors")  # as stored (the readout in half precision)
    x = VOCAB.mask(COMBOS) @ torch.randn(VOCAB.n_concepts, 8, generator=torch.Generator().manual_seed(0))
    cond = ssae.save_features(f"{folder}/cond_set.safetensors", x, VOCAB, COMBOS, site="conditioning")
    ssae.train(ssae.load_features(cond), PRESETS["additive"]).ssae.save(f"{folder}/map_conditioning.safetensors")
    base = host.sampling.tiny_model()
    clip = TextEncoder()
    context = VOCAB.prompt(COMBOS[0][:3])  # names three of the four categories
    positive, negative = clip.encode_from_tokens_scheduled(context), encode([], 77, 0)
    latent = {"samples": torch.zeros(1, 4, 4, 4)}
    run = functools.partial(host.run, n["SSAEBlockMap"], model=base, positive=positive, negative=negative,
                            latent_image=latent, seed=5, steps=2, cfg=2.0, sampler_name="euler",
                            scheduler="simple", ssae_files="map_*", context=context)
    out = run(strength=3.0, filename_prefix="maps/tiny", clip=clip)
    image, edited = out.args
    text = host.ui(out)
    assert out.ui["images"] == [{"filename": "tiny.png", "subfolder": "maps", "type": "output"}]
    report = json.loads(open(host.folder_paths.get_output_directory() + "/maps/tiny.json").read())
    assert list(report["sites"]) == ["joint_blocks.0.txt_in", "joint_blocks.0.img", "joint_blocks.1.txt_in"]
    swaps = report["swaps"]
    assert [s["category"] for s in swaps] == list(VOCAB.categories)[:3] and report["cases"] == 3
    assert edited["samples"].shape == (3 * 3 + 1, 4, 4, 4) and image.ndim == 4 and image.shape[-1] == 3
    noise = torch.randn(1, 4, 4, 4, generator=torch.manual_seed(5))
    plain = host.sampling.sample(base, host.sampling.Cond(positive[0][0], positive[0][1]["pooled_output"]),
                                 host.sampling.Cond(negative[0][0], negative[0][1]["pooled_output"]), steps=2,
                                 noise=noise)
    assert torch.equal(edited["samples"][-1:], plain), "the reference is the unedited sample"
    for k, site in enumerate(report["sites"]):
        for j, s in enumerate(swaps):
            edited_prompt = context.replace(s["old"], s["new"])
            target = sample_with(host, base, clip.encode_from_tokens_scheduled(edited_prompt), negative, steps=2,
                                 noise=noise)
            choice = json.dumps({"add": {s["new"]: 1}, "remove": {s["old"]: 1}})
            concepts = host.run(n["SSAEConceptVector"], ssae=models[site], mode="edit", concepts=choice).args[0]
            patched = host.run(n["SSAEPatchModel"], model=base, concepts=concepts, strength=3.0,
                               context=context).args[0]
            by_hand = sample_with(host, patched, positive, negative, steps=2, noise=noise)
            torch.testing.assert_close(edited["samples"][3 * k + j:3 * k + j + 1], by_hand)
            want = float((by_hand - plain).norm() / plain.norm())
            assert report["sites"][site]["movement_per_category"][s["category"]] == pytest.approx(want)
            assert want > 1e-3, (site, s)
            toward = 1 - float((by_hand - target).norm() / (plain - target).norm())
            assert report["sites"][site]["toward_prompt_per_category"][s["category"]] == pytest.approx(toward)
    assert "map_conditioning.safetensors was trained on the conditioning, not a block: left out of the map" in text
    assert "nothing of pose" in text and "wrote tiny.json and .png" in text
    assert "(13 samples); goes furthest toward the edited prompt" in text
    untargeted = run(strength=3.0, context="blond, market, hat", clip=clip, filename_prefix="maps/names")
    assert "the context does not hold A blond girl, at a market, and a hat word for word" in host.ui(untargeted)
    assert "(10 samples); moves the sample most" in host.ui(untargeted), "no target: the movement reading"
    assert Path(host.folder_paths.get_output_directory(), "maps", "tiny.png").stat().st_size and image.std() > 0.05
    still = run(strength=0.0)
    assert still.ui["images"] == [{"filename": "ssae_block_map.png", "subfolder": "", "type": "output"}]
    report = json.loads(open(host.folder_paths.get_output_directory() + "/ssae_block_map.json").read())
    assert all(v == 0.0 for site in report["sites"].values() for v in site["movement_per_category"].values())
    assert torch.equal(still.args[1]["samples"][:1], plain)


def test_block_map_refuses_what_it_cannot_map(host):
    run = functools.partial(host.run, host.nodes["SSAEBlockMap"], model=host.sampling.tiny_model(),
                            positive=encode(COMBOS[0]), negative=encode([]),
                            latent_image={"samples": torch.zeros(1, 4, 4, 4)}, sampler_name="euler",
                            scheduler="simple", context=VOCAB.prompt(COMBOS[0]))
    with pytest.raises(ValueError, match="no SSAE in models/ssae matches 'nothing_\\*'"):
        run(ssae_files="nothing_*")
    with pytest.raises(ValueError, match="all trained on the conditioning"):
        run(ssae_files="map_conditioning*")
    with pytest.raises(ValueError, match="needs the context"):
        run(ssae_files="map_*", context="")
