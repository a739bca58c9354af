"""The world's CLIP-L (tokens, weights, encoding as ComfyUI does it) and the flow maths ComfyUI samples with."""
from __future__ import annotations

import pytest
import torch

from ssae.errors import SSAEError
from ssae.world.flow import (
    comfy_noise,
    euler_sample,
    noisy,
    shift_sigma,
    simple_schedule,
    training_sigmas,
    velocity_target,
)
from ssae.world.text import (
    END,
    HIDDEN_LAYER,
    POSITIONS,
    START,
    TextEncoder,
    clip_state_dict,
    comfy_conditioning,
    tokenize,
)

WORLD_EXTRA = "the world's text encoder: pip install -e '.[world]'"


@pytest.fixture(scope="module")
def clip_sd():
    return clip_state_dict(0)


@pytest.fixture(scope="module")
def encoder(clip_sd):
    pytest.importorskip("transformers", reason=WORLD_EXTRA)
    pytest.importorskip("instant_clip_tokenizer", reason=WORLD_EXTRA)
    return TextEncoder(clip_sd)


def test_tokens_are_comfyuis():
    pytest.importorskip("instant_clip_tokenizer", reason=WORLD_EXTRA)
    # ids of ComfyUI's own CLIP tokenizer for this prompt (checked against ComfyUI 0.3.64)
    ids = tokenize("a red circle on a blue background, top left")
    assert ids[:12] == [49406, 320, 736, 7117, 525, 320, 1746, 5994, 267, 1253, 1823, 49407]
    assert len(ids) == POSITIONS and set(ids[12:]) == {END}, "padded with the end token"
    assert tokenize("") == [START] + [END] * (POSITIONS - 1)
    with pytest.raises(SSAEError, match="shorten"):
        tokenize("red " * 80)


def test_weights_are_a_clip_l_of_the_seed(clip_sd):
    assert all(v.dtype == torch.float16 for v in clip_sd.values())
    assert clip_sd["text_model.embeddings.token_embedding.weight"].shape == (49408, 768)
    assert clip_sd["text_model.encoder.layers.11.mlp.fc1.weight"].shape == (3072, 768)
    assert "text_model.encoder.layers.12.mlp.fc1.weight" not in clip_sd
    assert len([k for k in clip_sd if k.startswith("text_model.encoder.layers.")]) == 12 * 16
    assert "text_projection.weight" in clip_sd


def test_encoding_is_comfyuis_recipe(encoder):
    prompts = ["a circle, red, on black, top left", "a circle, red, on black, top right", ""]
    hidden, pooled = encoder.encode(prompts)
    assert hidden.shape == (3, 77, 768) and pooled.shape == (3, 768) and hidden.dtype == torch.float32
    # causal attention: the prompts agree up to the word where they differ (token 10: "left" / "right")
    torch.testing.assert_close(hidden[0, :10], hidden[1, :10])
    assert (hidden[0, 10] - hidden[1, 10]).norm() > 0.5 * hidden[0, 10].norm()
    # the conditioning is layer 11 of 12 without the final norm; pooled is the final-normed last layer at the
    # first end token
    ids = torch.tensor([tokenize(p) for p in prompts])
    out = encoder.model(input_ids=ids, output_hidden_states=True)
    torch.testing.assert_close(hidden, out.hidden_states[HIDDEN_LAYER + 1])
    ends = (ids == END).int().argmax(1)
    assert ends.tolist() == [11, 11, 1]
    last = out.hidden_states[-1][torch.arange(3), ends]
    final = encoder.model.get_submodule("final_layer_norm") if hasattr(encoder.model, "final_layer_norm") \
        else encoder.model.text_model.final_layer_norm
    torch.testing.assert_close(pooled, final(last))
    cond, pool = comfy_conditioning(hidden, pooled)
    assert cond.shape == (3, 77, 4096) and pool.shape == (3, 2048)
    assert cond[..., 768:].abs().max() == 0 and pool[..., 768:].abs().max() == 0


def test_encoder_refuses_other_models():
    pytest.importorskip("transformers", reason=WORLD_EXTRA)
    with pytest.raises(SSAEError, match="not a CLIP-L"):
        TextEncoder({"text_model.embeddings.token_embedding.weight": torch.zeros(49408, 768)})


def test_simple_schedule_is_comfyuis_table():
    sig = simple_schedule(20)
    assert sig.shape == (21,) and sig[0] == 1.0 and sig[-1] == 0.0 and (sig[1:] < sig[:-1]).all()
    # sigma table entry k (1..1000) is shift(k / 1000); `simple` takes entry 1000 - floor(i * 1000 / steps)
    assert sig[5].item() == pytest.approx(float(shift_sigma((1000 - 250) / 1000)), abs=1e-7)
    assert float(shift_sigma(0.5)) == pytest.approx(0.75)


def test_training_sigmas_cover_the_schedule():
    s = training_sigmas(4096, torch.Generator().manual_seed(0))
    assert 0 < s.min() and s.max() < 1 and 0.6 < s.median() < 0.9  # shift 3 puts most of them at high noise


def test_euler_on_the_exact_velocity_lands_on_the_data():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 16, 8, 8, generator=g), torch.randn(2, 16, 8, 8, generator=g)
    s = torch.tensor([0.3, 0.8])
    torch.testing.assert_close(noisy(x0, noise, s) - s.view(-1, 1, 1, 1) * velocity_target(x0, noise), x0)
    exact = lambda x, sigma: (x - x0) / sigma.view(-1, 1, 1, 1)  # noqa: E731  v = noise - x0 on the straight path
    out = euler_sample(exact, exact, noise, simple_schedule(7), cfg=4.0)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_noise_is_comfyuis_for_the_seed():
    torch.manual_seed(1234)
    expected = torch.randn(1, 16, 8, 8)
    assert torch.equal(comfy_noise(1234, (1, 16, 8, 8)), expected)
