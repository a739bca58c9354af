"""Block hooks under the passes ComfyUI really makes, on a tiny MMDiT driven as ComfyUI drives it (tests/comfy_stubs):
positive and negative batched or split, a guidance pass at the same sigma, long prompts (two CLIP chunks and T5
rows) and prompts repeat-padded to a longer one's length. Capture keeps one positive pass per step and the prompt's
own rows with their CLIP/T5 layout; a text-stream edit lands CLIP on CLIP and T5 on T5 on every repetition."""
import pytest
import torch

from ssae.capture import CaptureBuffer
from ssae.errors import ShapeMismatchError, SSAEError
from ssae.hooks import ROW_LAYOUTS, BlockHook, patch_block
from ssae.layout import RowLayout, TokenLayout, row_layouts
from ssae.sites import parse_site
from ssae.steer import StreamEdit

HIDDEN = 32


class Spy:
    """A block patch that runs `previous` (or the block) and keeps what came out, with the pass it came in."""

    def __init__(self, previous=None):
        self.previous, self.seen = previous, []

    def __deepcopy__(self, memo):  # model clones keep this one spy, as they keep a capture buffer
        return self

    def __call__(self, args, extra):
        out = self.previous(args, extra) if self.previous is not None else extra["original_block"](args)
        opts = args["transformer_options"]
        self.seen.append({"sigma": float(opts["sigmas"][0]), "chunks": list(opts["cond_or_uncond"]),
                          "txt": None if out["txt"] is None else out["txt"].clone(), "img": out["img"].clone()})
        return out


@pytest.fixture(scope="module")
def host(fake_comfy):
    return fake_comfy


def run(host, site: str, positive, negative, passes="batched", hook=None, spy_under=False, **sample):
    """Sample the tiny model with `hook` on `site` (installed as SSAE's nodes install it); the spy below the hook."""
    target = parse_site(site)
    model = host.tiny_model()
    under = Spy()
    if spy_under:
        model.set_model_patch_replace(under, "dit", "double_block", target.block)
    m = patch_block(model, target.block, hook)
    host.sample(m, positive, negative, passes=passes, **sample)
    return model.model.calls, under


def capture(host, site, positive, negative, passes="batched", per_step=True, **sample):
    buf = CaptureBuffer("none" if site.endswith("txt") else "mean", per_step)
    calls, under = run(host, site, positive, negative, passes, BlockHook(parse_site(site).stream, capture=buf),
                       spy_under=True, **sample)
    return buf.take(), calls, under


@pytest.mark.parametrize("site", ["joint_blocks.0.txt", "joint_blocks.1.img"])
@pytest.mark.parametrize("batch", [1, 2])
def test_split_cfg_passes_capture_what_a_batched_pass_does(host, site, batch):
    """ComfyUI runs the positive and negative prompts as separate model calls on low memory (in either order):
    the capture is the batched one, a step per sigma, the positive rows only."""
    pos, neg = host.Cond(host.conditioning(77, 77, seed=1)), host.Cond(host.conditioning(77, 77, seed=2))
    (x, shape), calls, _ = capture(host, site, pos, neg, "batched", batch=batch)
    assert [c["cond_or_uncond"] for c in calls] == [[0, 1]] * 3
    assert x.shape[0] == 3 * batch, "a row per step and latent"
    assert shape == ({"clip": [77, HIDDEN], "t5": [77, HIDDEN]} if site.endswith("txt") else [HIDDEN])
    for passes in ("split", "split-negative-first"):
        (split, split_shape), calls, _ = capture(host, site, pos, neg, passes, batch=batch)
        assert sorted(map(str, (c["cond_or_uncond"] for c in calls))) == ["[0]"] * 3 + ["[1]"] * 3, "split passes"
        assert split_shape == shape
        torch.testing.assert_close(split, x, rtol=1e-5, atol=1e-6)


def test_a_guidance_pass_at_the_same_sigma_is_not_recorded(host):
    """SkipLayerGuidance runs the positive prompt again at the same sigma with some blocks skipped: the capture
    keeps the first, plain positive pass of each step, batched or split."""
    pos, neg = host.Cond(host.conditioning(77, 0, seed=1)), host.Cond(host.conditioning(77, 0, seed=2))
    for passes in ("batched", "split"):
        (x, _), calls, under = capture(host, "joint_blocks.0.txt", pos, neg, passes, guidance_blocks=(1,))
        positive_only = sum(c["cond_or_uncond"] == [0] for c in calls)
        assert positive_only == (3 if passes == "batched" else 6), "the guidance passes ran"
        firsts = {}
        for s in under.seen:
            if 0 in s["chunks"]:
                firsts.setdefault(s["sigma"], s["txt"][s["chunks"].index(0)])
        assert x.shape[0] == 3, "one row per step"
        torch.testing.assert_close(x, torch.stack(list(firsts.values())).flatten(1))


def test_a_long_prompt_is_captured_as_its_own_rows_whether_padded_or_split(host):
    """A prompt over 75 tokens (154 CLIP + 77 T5 rows) beside a 77 + 77 negative: batched, ComfyUI repeat-pads both to
    462 rows; split, it is its own 231. Either way the capture is the prompt's 231 rows with their layout."""
    pos, neg = host.Cond(host.conditioning(154, 77, seed=3)), host.Cond(host.conditioning(77, 77, seed=4))
    want = {"clip": [154, HIDDEN], "t5": [77, HIDDEN]}
    (x, shape), calls, under = capture(host, "joint_blocks.0.txt", pos, neg, "batched")
    assert {c["context_rows"] for c in calls} == {462}, "batched with repeat padding"
    assert shape == want and x.shape == (3, 231 * HIDDEN)
    stream = torch.stack([s["txt"][0] for s in under.seen])  # the positive row: 2 repetitions of 231
    assert torch.equal(x, stream[:, :231].flatten(1)) and torch.allclose(stream[:, :231], stream[:, 231:], atol=1e-5)
    (split, split_shape), calls, _ = capture(host, "joint_blocks.0.txt", pos, neg, "split")
    assert {c["context_rows"] for c in calls} == {231, 154} and split_shape == want and split.shape == x.shape


def test_two_positive_conditionings_at_one_step_are_refused():
    buf = CaptureBuffer("mean")
    assert buf.record(torch.ones(1, 2, 3), 0.5, ("a",)) and not buf.record(torch.ones(1, 2, 3), 0.5, ("a",))
    with pytest.raises(SSAEError, match="two positive conditionings"):
        buf.record(torch.ones(1, 2, 3), 0.5, ("b",))
    hook = BlockHook("img", capture=CaptureBuffer())
    opts = {"sigmas": torch.tensor([0.5] * 3), "cond_or_uncond": [0, 0, 1]}
    with pytest.raises(SSAEError, match="holds 2 entries"):
        hook({"img": torch.zeros(3, 4, 2), "txt": None, "transformer_options": opts},
             {"original_block": lambda a: dict(a)})


def edit_rows(host, positive, negative, passes, edit):
    """What a text-stream edit at joint block 0 adds to each batch row of each pass: [(chunks, addend)]."""
    target = parse_site("joint_blocks.0.txt")
    model = host.tiny_model()
    under = Spy()
    model.set_model_patch_replace(under, "dit", "double_block", 0)
    hook = BlockHook("txt", edit, apply_to="both")
    m = patch_block(model, target.block, hook)
    over = Spy(previous=m.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 0)])
    m.set_model_patch_replace(over, "dit", "double_block", 0)
    host.sample(m, positive, negative, passes=passes, steps=1)
    return [(a["chunks"], b["txt"] - a["txt"]) for a, b in zip(under.seen, over.seen)]


@pytest.mark.parametrize("passes", ["batched", "split"])
def test_a_text_stream_edit_lands_clip_on_clip_and_t5_on_t5_of_every_repetition(host, passes):
    """An SSAE of 77 CLIP + 77 T5 rows edits a 154 CLIP + 77 T5 prompt: its CLIP part on the first CLIP chunk, its T5
    part on the T5 rows, the second chunk untouched; on each repetition alike where the prompt was repeat-padded
    (batched beside a 77 + 77 negative: 462 rows, the positive twice, the negative three times)."""
    delta = torch.randn(154, HIDDEN, generator=torch.Generator().manual_seed(0))
    edit = StreamEdit(delta, 1.0, TokenLayout(77, 77))
    pos, neg = host.Cond(host.conditioning(154, 77, seed=5)), host.Cond(host.conditioning(77, 77, seed=6))
    on_long = torch.cat([delta[:77], torch.zeros(77, HIDDEN), delta[77:]])  # 231 rows
    want = {0: on_long, 1: delta}
    seen = edit_rows(host, pos, neg, passes, edit)
    assert [c for c, _ in seen] == ([[0, 1]] if passes == "batched" else [[0], [1]])
    for chunks, added in seen:
        for row, chunk in zip(added, chunks):
            one = want[chunk]
            torch.testing.assert_close(row, one.repeat(row.shape[0] // one.shape[0], 1), atol=1e-5, rtol=0)


def test_an_edit_with_t5_rows_is_refused_where_the_stream_layout_is_unknown():
    hook = BlockHook("txt", StreamEdit(torch.ones(4, 2), 1.0, TokenLayout(2, 2)), apply_to="both")
    args = {"img": torch.zeros(1, 3, 2), "txt": torch.zeros(1, 4, 2),
            "transformer_options": {"sigmas": torch.tensor([0.5]), "cond_or_uncond": [0]}}
    with pytest.raises(ShapeMismatchError, match="layout is unknown"):
        hook(args, {"original_block": lambda a: dict(a)})
    args["transformer_options"][ROW_LAYOUTS] = (RowLayout(TokenLayout(2, 2)),)
    assert torch.equal(hook(args, {"original_block": lambda a: dict(a)})["txt"], torch.ones(1, 4, 2))


def test_row_layouts_read_repeat_padding_and_the_clip_t5_split(host):
    long, short = host.conditioning(154, 77, seed=7), host.conditioning(77, 77, seed=8)
    rows = row_layouts(torch.cat([long.repeat(1, 2, 1), short.repeat(1, 3, 1)]))
    assert rows == (RowLayout(TokenLayout(154, 77), 2), RowLayout(TokenLayout(77, 77), 3))
    six = host.conditioning(5, 2, seed=9).repeat(1, 6, 1)
    assert row_layouts(six) == (RowLayout(TokenLayout(5, 2), 6),), "repeat counts that are products of 2 and 3"
    assert row_layouts(torch.zeros(1, 154, 64)) == (RowLayout(TokenLayout(154, 0), 1),), "a zeroed negative: no period"
    assert row_layouts(host.conditioning(77, 0, seed=10)) == (RowLayout(TokenLayout(77, 0), 1),)


def test_an_edit_is_placed_only_on_the_rows_it_edits():
    """A T5-only edit for the positive prompt; the negative (CLIP rows only, which no T5 edit fits) is left alone
    rather than refused."""
    hook = BlockHook("txt", StreamEdit(torch.ones(2, 3), 1.0, TokenLayout(0, 2)))
    layouts = (RowLayout(TokenLayout(2, 2)), RowLayout(TokenLayout(4, 0)))
    args = {"img": torch.zeros(2, 3, 3), "txt": torch.zeros(2, 4, 3),
            "transformer_options": {"sigmas": torch.tensor([0.5, 0.5]), "cond_or_uncond": [0, 1], ROW_LAYOUTS: layouts}}
    out = hook(args, {"original_block": lambda a: dict(a)})["txt"]
    assert torch.equal(out[0], torch.tensor([[0.0] * 3] * 2 + [[1.0] * 3] * 2)) and not out[1].any()
