"""Block edits on a tiny random MMDiT that follows ComfyUI's patch and attention-override protocols."""
import copy

import pytest
import torch

from ssae.block_edit import (
    BlockEdit,
    MatchedEdit,
    StreamAndVec,
    block_edit_parts,
    check_site,
    edit_blocks,
    parse_block_site,
    stream_scale,
)
from ssae.errors import ShapeMismatchError, SSAEError
from ssae.steer import StreamEdit
from tests.tiny_mmdit import TinyMMDiT, options

W = 8


def edit(stream, delta, strength=1.0, **kw):
    """A BlockEdit of `delta` times `strength` (the tests' shorthand)."""
    return BlockEdit(stream, StreamEdit(delta, strength), **kw)


def inputs(batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 5, W, generator=g), torch.randn(batch, 6, W, generator=g),
            torch.randn(batch, W, generator=g))


def by_hand(model, txt, img, c, block, add, mode):
    """The image stream with `add` ([B, L, C]) on block `block`'s text input, as residual or as keys/values only."""
    for i, b in enumerate(model.joint_blocks):
        if i == block and mode == "residual":
            txt = txt + add
        if i == block and mode == "kv":
            txt, img = b.mix(txt, img, c, kv_from=txt + add)
        else:
            txt, img = b(txt, img, c)
    return img


@pytest.mark.parametrize("mode", ["residual", "kv"])
@pytest.mark.parametrize("block", [0, 1, 2])
def test_input_edit_reaches_the_named_block_and_positive_rows_only(mode, block):
    model, (txt, img, c) = TinyMMDiT(), inputs()
    delta = torch.randn(3, W)  # token-aligned: the first 3 of 5 text rows
    hook = edit("txt", delta, strength=1.5, position="input", mode=mode)
    got = model(txt, img, c, options({block: hook}, cond_or_uncond=(1, 0)))
    add = torch.zeros_like(txt)
    add[1, :3] = 1.5 * delta  # cond_or_uncond [1, 0]: row 1 is the positive one
    assert torch.allclose(got, by_hand(model, txt, img, c, block, add, mode), atol=1e-5)
    assert torch.allclose(got[0], model(txt, img, c)[0], atol=1e-6)
    assert not torch.allclose(got[1], model(txt, img, c)[1], atol=1e-3)


def test_kv_edit_differs_from_the_residual_one_and_leaves_the_next_text_input_alone():
    model, (txt, img, c) = TinyMMDiT(), inputs()
    delta = torch.randn(W)
    kv = model(txt, img, c, options({0: edit("txt", delta, position="input", mode="kv", apply_to="both")}))
    res = model(txt, img, c, options({0: edit("txt", delta, position="input", apply_to="both")}))
    assert not torch.allclose(kv, res, atol=1e-3)
    seen = {}

    def spy(args, extra):
        seen["txt"] = args["txt"]
        return extra["original_block"](args)
    model(txt, img, c, options({0: edit("txt", delta, position="input", mode="kv", apply_to="both"), 1: spy}))
    unedited_txt, _ = model.joint_blocks[0](txt, img, c)
    # block 0's text queries and residual are unedited: its text output moves only through the edited keys/values
    assert not torch.allclose(seen["txt"], unedited_txt + delta, atol=1e-2)


@pytest.mark.parametrize("mode,position,stream", [("residual", "input", "txt"), ("kv", "input", "txt"),
                                                  ("residual", "output", "img"), ("residual", "input", "img")])
def test_strength_zero_and_outside_the_window_are_the_unpatched_model(mode, position, stream):
    model, (txt, img, c) = TinyMMDiT(), inputs()
    plain = model(txt, img, c)
    zero = edit(stream, torch.randn(W), strength=0.0, position=position, mode=mode, apply_to="both")
    late = edit(stream, torch.randn(W), strength=3.0, position=position, mode=mode, sigma_window=(0.4, 0.0))
    assert torch.equal(model(txt, img, c, options({0: zero})), plain)
    assert torch.equal(model(txt, img, c, options({0: late}, sigma=0.5)), plain)
    assert not torch.equal(model(txt, img, c, options({0: late}, sigma=0.3)), plain)


def test_a_deep_copy_of_the_options_keeps_the_edit():
    """ComfyUI's ModelPatcher.clone() deep-copies model_options, patches included."""
    model, (txt, img, c) = TinyMMDiT(), inputs()
    opts = options({0: edit("txt", torch.randn(W), position="input", mode="kv"),
                    1: edit("txt", torch.randn(W), position="input", mode="kv")})
    assert torch.equal(model(txt, img, c, copy.deepcopy(opts)), model(txt, img, c, opts))
    assert not torch.equal(model(txt, img, c, opts), model(txt, img, c))


def test_a_range_of_kv_edits_chains_onto_attention_overrides_already_there():
    model, (txt, img, c) = TinyMMDiT(), inputs()
    calls = []

    def other(func, q, k, v, *a, **kw):
        calls.append(q.shape[1])
        return func(q, k, v, *a, **kw)
    delta = torch.randn(W)
    opts = options({i: edit("txt", delta, position="input", mode="kv", apply_to="both") for i in (0, 1, 2)})
    plain = model(txt, img, c, opts)
    chained = model(txt, img, c, {**opts, "optimized_attention_override": other})
    assert torch.allclose(chained, plain, atol=1e-6)
    assert calls.count(11) == 3 and calls.count(6) == 1  # three joint attentions, block 0's image self-attention


def test_bad_combinations_are_clear_errors():
    with pytest.raises(ShapeMismatchError, match="text stream"):
        edit("img", torch.randn(W), position="input", mode="kv")
    model, (txt, img, c) = TinyMMDiT(), inputs()
    with pytest.raises(ShapeMismatchError, match="pre_only"):
        model(txt, img, c, options({2: edit("txt", torch.randn(W), position="output", apply_to="both")}))


def test_norm_matched_edit_scales_with_the_stream():
    x = torch.ones(1, 4, 2) * torch.tensor([1.0, 2.0, 3.0, 4.0])[None, :, None]
    row_norms = x[0].norm(dim=-1)
    assert torch.allclose(stream_scale(x, row_norms[:3], pooled=False).flatten(), torch.ones(4))
    assert torch.allclose(stream_scale(2 * x, row_norms[:3], pooled=False).flatten(), torch.tensor([2.0, 2, 2, 1]))
    assert torch.allclose(stream_scale(x, x.mean(1).norm() / 3, pooled=True).flatten(), torch.tensor([3.0]))
    model, (txt, img, c) = TinyMMDiT(), inputs()
    delta = torch.randn(5, W)
    matched = BlockEdit("txt", MatchedEdit(delta, 1.0, None, txt[0].norm(dim=-1)), "input", apply_to="both")
    fixed = edit("txt", delta, position="input", apply_to="both")
    one = slice(0, 1)
    assert torch.allclose(model(txt[one], img[one], c[one], options({0: matched}, batch=1, cond_or_uncond=(0,))),
                          model(txt[one], img[one], c[one], options({0: fixed}, batch=1, cond_or_uncond=(0,))),
                          atol=1e-5)


def test_the_modulation_vector_edit_reaches_the_blocks_it_names_on_positive_rows():
    model, (txt, img, c) = TinyMMDiT(), inputs()
    seen = {}

    def spy(i):
        def patch(args, extra):
            seen[i] = args["vec"]
            return extra["original_block"](args)
        return patch
    dv = torch.randn(W)
    vec_only = BlockEdit("txt", None, "input", vec_edit=dv, vec_strength=2.0, previous=spy(1))
    opts = options({1: vec_only, 0: spy(0), 2: spy(2)}, cond_or_uncond=(1, 0))
    out = model(txt, img, c, opts)
    assert torch.equal(seen[0], c) and torch.equal(seen[2], c)  # a patch's vec reaches its own block only
    assert torch.allclose(seen[1], c + torch.stack([torch.zeros(W), 2.0 * dv]))
    assert torch.allclose(out[0], model(txt, img, c)[0], atol=1e-6)
    zero = options({1: BlockEdit("txt", None, "input", vec_edit=dv, vec_strength=0.0)})
    assert torch.equal(model(txt, img, c, zero), model(txt, img, c))


def test_stream_and_vec_capture_records_both_parts_of_positive_rows():
    model, (txt, img, c) = TinyMMDiT(), inputs()
    buf = StreamAndVec("none")
    model(txt, img, c, options({1: BlockEdit("txt", position="input", capture=buf)}, cond_or_uncond=(1, 0)))
    model(txt, img, c, options({1: BlockEdit("txt", position="input", capture=copy.deepcopy(buf))},
                               cond_or_uncond=(1, 0), sigma=0.4))
    txt1, _ = model.joint_blocks[0](txt, img, c)
    assert buf.steps == 2 and buf.vec.steps == 2
    got, shape = buf.take()
    assert got.shape == (1, 5 * W + W) and shape == {"rows": [5, W], "vec": [W]}
    assert torch.allclose(got[0], torch.cat([txt1[1].flatten(), c[1]]), atol=1e-6)
    edit_, vec = block_edit_parts(got[0], shape, 2.0, "txt")
    assert torch.equal(vec, c[1]) and torch.allclose(edit_.delta, txt1[1], atol=1e-6) and edit_.strength == 2.0


def test_sites_and_edit_plans():
    s = parse_block_site("joint_blocks.0.txt_in")
    assert (s.block, s.stream, s.position, s.reader, str(s)) == (0, "txt", "input", 0, "joint_blocks.0.txt_in")
    assert parse_block_site("joint_blocks.3.img").reader == 4
    for bad in ("joint_blocks.x.txt", "joint_blocks.1.vec", "conditioning"):
        with pytest.raises(SSAEError, match="unknown block site"):
            parse_block_site(bad)
    check_site(parse_block_site("joint_blocks.2.txt_in"), 3, 64, 64)
    with pytest.raises(ShapeMismatchError, match="pre_only"):
        check_site(parse_block_site("joint_blocks.2.txt"), 3, 64, 64)
    with pytest.raises(ShapeMismatchError, match="0..2"):
        check_site(parse_block_site("joint_blocks.3.img"), 3, 64, 64)
    with pytest.raises(ShapeMismatchError, match="1536"):
        check_site(parse_block_site("joint_blocks.0.img"), 3, 64, 1536)
    out0 = parse_block_site("joint_blocks.0.txt")
    assert edit_blocks(out0, 3, "kv", carry=True) == [(1, "input", True), (2, "input", True)]
    assert edit_blocks(out0, 3, "kv", carry=False) == [(1, "input", True), (2, "input", False)]
    assert edit_blocks(out0, 3, "residual", carry=False) == [(0, "output", True), (1, "input", False),
                                                             (2, "input", False)]
    with pytest.raises(SSAEError, match="carry"):
        edit_blocks(out0, 3, "residual", carry=True)
    with pytest.raises(SSAEError, match="text stream"):
        edit_blocks(parse_block_site("joint_blocks.0.img"), 3, "kv", carry=False)
