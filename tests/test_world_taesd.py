"""The TAESD3-layout autoencoder: ComfyUI's key layout, the exact thumbnail encoder, and reduced == full decoders."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssae.world.autoencoder import AutoencoderRecipe, images_to_tensor, random_crops, train_autoencoder
from ssae.world.render import render
from ssae.world.scene import make_world, random_scene
from ssae.world.taesd import (
    Stack,
    StackShape,
    full_state_dict,
    layout_shapes,
    load_stack,
    thumbnail_encoder_state_dict,
    thumbnail_latent,
)

MEAN, STD = torch.tensor([0.58, 0.57, 0.56]), torch.tensor([0.34, 0.33, 0.35])


def _expected_layout(decoder: bool) -> dict[str, tuple]:
    """ComfyUI's comfy/taesd/taesd.py layout, spelled out: plain convs and 64-wide residual blocks by index."""
    shapes = {}
    if decoder:
        convs = {"1": (64, 16, True), "7": (64, 64, False), "12": (64, 64, False), "17": (64, 64, False),
                 "19": (3, 64, True)}
        blocks = [3, 4, 5, 8, 9, 10, 13, 14, 15, 18]
    else:
        convs = {"0": (64, 3, True), "2": (64, 64, False), "6": (64, 64, False), "10": (64, 64, False),
                 "14": (16, 64, True)}
        blocks = [1, 3, 4, 5, 7, 8, 9, 11, 12, 13]
    for i, (cout, cin, bias) in convs.items():
        shapes[f"{i}.weight"] = (cout, cin, 3, 3)
        if bias:
            shapes[f"{i}.bias"] = (cout,)
    for b in blocks:
        for j in (0, 2, 4):
            shapes[f"{b}.conv.{j}.weight"] = (64, 64, 3, 3)
            shapes[f"{b}.conv.{j}.bias"] = (64,)
    return shapes


@pytest.mark.parametrize("decoder", [False, True])
def test_layout_is_comfyuis(decoder):
    assert layout_shapes(decoder) == _expected_layout(decoder)


def test_thumbnail_encoder_is_exact():
    x = torch.rand(3, 3, 64, 64)
    sd = thumbnail_encoder_state_dict(MEAN, STD)
    assert {k: tuple(v.shape) for k, v in sd.items()} == _expected_layout(decoder=False)
    z = load_stack(sd, decoder=False)(x)
    assert z.shape == (3, 16, 8, 8)
    torch.testing.assert_close(z, thumbnail_latent(x, MEAN, STD), atol=1e-5, rtol=0)
    assert z[:, 12:].abs().max() == 0, "the 4 spare channels are zero"


@pytest.mark.parametrize("shape", [StackShape(8, (1, 0, 1, 1), False), StackShape(12, (3, 2, 1, 0), True)])
def test_reduced_decoder_equals_its_full_layout(shape):
    torch.manual_seed(0)
    reduced = Stack(shape, decoder=True)
    for p in reduced.parameters():
        p.data.normal_(0, 0.1)  # not the zero-initialised blocks: every weight matters
    sd = full_state_dict(reduced)
    assert {k: tuple(v.shape) for k, v in sd.items()} == _expected_layout(decoder=True)
    z = torch.randn(2, 16, 8, 8)
    out = reduced(z)
    assert out.shape == (2, 3, 64, 64)
    torch.testing.assert_close(load_stack(sd, decoder=True)(z), out, atol=1e-5, rtol=1e-5)
    if not shape.full_res_conv:
        eye = sd["17.weight"][:, :, 1, 1]
        assert torch.equal(eye, torch.eye(64)) and sd["17.weight"].sum() == 64


def test_stack_shape_is_checked():
    with pytest.raises(ValueError, match="width"):
        StackShape(65)
    with pytest.raises(ValueError, match="blocks"):
        Stack(StackShape(8, (0, 0, 0, 2)), decoder=True)


def test_crops_stay_on_the_latent_grid():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 64, 64)
    z = thumbnail_latent(x, MEAN, STD)
    xc, zc = random_crops(x, z, 32, g)
    assert xc.shape == (4, 3, 32, 32) and zc.shape == (4, 16, 4, 4)
    torch.testing.assert_close(thumbnail_latent(xc, MEAN, STD), zc)  # the crop's latent is the latent's crop


def test_training_is_deterministic_and_learns():
    world = make_world()
    images = np.stack([render(random_scene(c, i)) for i, c in enumerate(world.train_combinations[:16])])
    recipe = AutoencoderRecipe(decoder=StackShape(8, (1, 0, 0, 0), False), steps=25, batch=8, lr=5e-3)
    losses: list[float] = []
    a = train_autoencoder(images, recipe, progress=lambda s, n, loss: losses.append(loss))
    b = train_autoencoder(images, recipe)
    assert len(losses) == 25 and np.mean(losses[-5:]) < np.mean(losses[:5])
    x = images_to_tensor(images)
    torch.testing.assert_close(a.decode(a.encode(x)), b.decode(b.encode(x)))
    enc, dec = a.state_dicts()
    torch.testing.assert_close(load_stack(dec, True)(a.encode(x)).clamp(0, 1), a.decode(a.encode(x)))
    torch.testing.assert_close(load_stack(enc, False)(x), a.encode(x), atol=1e-5, rtol=0)
