"""ssae.capture and the conditioning site end to end: captured samples collated into a feature set, capture
buffers shared by every clone of a patched model, and an SSAE's edit landing on the right rows of another layout."""
import copy

import pytest
import torch
from builders import VOCAB

import ssae
from ssae import FeatureFileError
from ssae.capture import CaptureBuffer, CapturedSample, collate
from ssae.hooks import BlockHook
from ssae.layout import TokenLayout, conditioning_features, layout_of_shape
from ssae.promptset import LabelledPrompt, prompt_set
from ssae.steer import edit_conditioning, split_conditioning
from ssae.train import PRESETS

WIDE = 2048 + 16  # wider than SD3's CLIP channels, so that CLIP rows (zero beyond 2048) can be told from T5 rows


def conditioning(combo, n_clip: int, n_t5: int, concept_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A stand-in for SD3 conditioning: each concept adds its own rows (CLIP rows zero beyond 2048), and pooled."""
    x = VOCAB.mask([combo]) @ concept_rows  # [1, (n_clip + n_t5) * WIDE + 4]
    cond = x[:, :-4].reshape(1, n_clip + n_t5, WIDE).clone()
    cond[:, :n_clip, 2048:] = 0
    return cond, x[:, -4:]


def test_collate_stacks_a_prompt_set_with_each_samples_split():
    samples, _ = prompt_set(VOCAB, 24, heldout=[("blond", "boat")])
    caps = [CapturedSample(s, "conditioning", {"clip": [2, 3]}, values=torch.full((1, 6), float(i)))
            for i, s in enumerate(samples)]
    batch = collate(caps)
    assert batch.features.shape == (24, 6) and torch.equal(batch.features[:, 0], torch.arange(24.0))
    assert batch.split == [s.split for s in samples] and batch.prompts == [s.prompt for s in samples]
    assert batch.labels == [list(s.concepts) for s in samples] and batch.feature_shape == {"clip": [2, 3]}
    assert collate(caps, "test").split == ["test"] * 24


def test_collate_resolves_all_token_shapes_and_refuses_mixed_sets():
    typed = LabelledPrompt(VOCAB, "blond, hat", ("A blond girl", "and a hat"), None)
    buf = CaptureBuffer(pool="none", per_step=True)
    for step in range(3):
        buf.record(torch.ones(1, 5, 4), float(step))
    batch = collate([CapturedSample(typed, "joint_blocks.0.txt", buffer=buf)])
    assert batch.features.shape == (3, 20) and batch.feature_shape == [5, 4], "one row per step, every token"
    assert batch.split == ["train"] * 3 and batch.labels == [["A blond girl", "and a hat"]] * 3
    for step in range(2):
        buf.record(torch.ones(1, 5, 4), float(step), layout=TokenLayout(3, 2))
    batch = collate([CapturedSample(typed, "joint_blocks.0.txt", buffer=buf)])
    assert batch.feature_shape == {"clip": [3, 4], "t5": [2, 4]}, "text rows keep the layout the hook read"
    a = CapturedSample(typed, "joint_blocks.0.img", [4], values=torch.ones(1, 4))
    with pytest.raises(FeatureFileError, match="mixes sites"):
        collate([a, CapturedSample(typed, "joint_blocks.1.img", [4], values=torch.ones(1, 4))])
    with pytest.raises(FeatureFileError, match="shapes \\[4\\] and \\[8\\].*different numbers of tokens"):
        collate([a, CapturedSample(typed, "joint_blocks.0.img", [8], values=torch.ones(1, 8))])


def test_every_clone_of_a_capturing_model_fills_the_one_buffer():
    """ComfyUI's ModelPatcher.clone() deep-copies model_options: a capture followed by ModelSamplingSD3, a LoRA
    loader or a patch samples a copy of the hook, which must still record into the buffer FEATURES carries."""
    buf = CaptureBuffer()
    patches = {("double_block", 0): BlockHook("img", capture=buf)}
    options = {"transformer_options": {"patches_replace": {"dit": patches}}}
    clone = copy.deepcopy(copy.deepcopy(options))
    hook = clone["transformer_options"]["patches_replace"]["dit"][("double_block", 0)]
    hook({"img": torch.ones(1, 3, 4), "txt": None}, {"original_block": lambda args: dict(args)})
    assert buf.steps == 1 and torch.equal(buf.take()[0], torch.ones(1, 4))


def test_an_ssae_edit_lands_on_the_clip_and_t5_rows_of_conditioning_in_another_layout(tmp_path):
    """Trained on 3 CLIP + 5 T5 rows (diffusers gives more T5 rows than ComfyUI), applied to a prompt encoded
    as 6 CLIP rows (a second chunk) + 2 T5 rows: the first CLIP rows take the CLIP part of the edit, the
    second chunk stays as it was, and the T5 rows take the first T5 rows of the edit."""
    g = torch.Generator().manual_seed(0)
    concept_rows = torch.randn(VOCAB.n_concepts, 8 * WIDE + 4, generator=g)
    combos = [list(c) for c in VOCAB.all_combinations()]
    feats, shape = zip(*(conditioning_features(*conditioning(c, 3, 5, concept_rows)) for c in combos))
    assert shape[0] == {"clip": [3, WIDE], "t5": [5, WIDE], "pooled_output": [4]}
    path = ssae.save_features(tmp_path / "cond.safetensors", torch.cat(feats), VOCAB, combos, site="conditioning",
                              feature_shape=shape[0])
    model = ssae.train(ssae.load_features(path), PRESETS["additive"]).ssae
    assert layout_of_shape(model.feature_shape) == TokenLayout(3, 5)
    cond, pooled = conditioning(combos[0], 3, 5, concept_rows)
    chunk = torch.nn.functional.pad(torch.randn(1, 3, 2048, generator=g), (0, WIDE - 2048))
    long = torch.cat([cond[:, :3], chunk, cond[:, 3:5]], 1)
    tokens_d, pooled_d = split_conditioning(model.delta(add=["brunette"], remove=["blond"]), model.feature_shape)
    edited, new_pooled, notes = edit_conditioning(long, pooled, tokens_d, layout_of_shape(model.feature_shape),
                                                  pooled_d, 1.0)
    want, want_pooled = conditioning(["A brunette girl", *combos[0][1:]], 3, 5, concept_rows)

    def close(got, expected, before):  # the edit made, against the edit wanted, within 2% of its size
        return float((got - expected).norm() / (expected - before).norm()) < 0.02

    assert close(edited[:, :3], want[:, :3], long[:, :3]) and close(edited[:, 6:], want[:, 3:5], long[:, 6:])
    assert torch.equal(edited[:, 3:6], chunk), "the second CLIP chunk has no edit to take"
    assert notes == [
        "the conditioning's CLIP rows 4-6 are left unedited: the SSAE has 3 CLIP rows (3 CLIP + 5 T5 rows)",
        "the SSAE's T5 rows 3-5 are dropped: the conditioning has 2 T5 rows (6 CLIP + 2 T5 rows)"]
    assert close(new_pooled, want_pooled, pooled)
    assert not edited[:, :6, 2048:].any(), "CLIP rows keep their zero channels"
