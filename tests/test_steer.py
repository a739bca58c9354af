"""Patch, capture and conditioning maths on plain tensors (no ComfyUI)."""
import pytest
import torch

from ssae.capture import CaptureBuffer
from ssae.errors import ShapeMismatchError, SSAEError
from ssae.hooks import cfg_rows, in_window
from ssae.sites import Site, check_block_site, parse_site
from ssae.steer import add_to_stream, align_tokens, edit_conditioning


def test_parse_site_forms():
    assert parse_site("conditioning").is_conditioning
    s = parse_site("joint_blocks.7.txt")
    assert (s.block, s.stream, str(s)) == (7, "txt", "joint_blocks.7.txt")
    for bad in ("joint_blocks.x.txt", "blocks.1.img", "joint_blocks.1.both", ""):
        with pytest.raises(SSAEError, match="unknown site"):
            parse_site(bad)


def test_check_block_site_names_the_problem():
    check_block_site(Site(3, "img"), depth=24, hidden=1536, feature_width=1536)
    with pytest.raises(ShapeMismatchError, match="0..23"):
        check_block_site(Site(24, "img"), 24, 1536, 1536)
    with pytest.raises(ShapeMismatchError, match="pre_only"):
        check_block_site(Site(23, "txt"), 24, 1536, 1536)
    with pytest.raises(ShapeMismatchError, match="1536.*2432|2432"):
        check_block_site(Site(3, "txt"), 38, 2432, 1536)
    with pytest.raises(SSAEError, match="SSAEApplyConditioning"):
        check_block_site(Site(), 24, 1536, 1536)


def test_align_tokens_truncates_and_pads():
    d = torch.arange(12.0).reshape(4, 3)
    assert torch.equal(align_tokens(d, 2), d[:2])
    padded = align_tokens(d, 6)
    assert padded.shape == (6, 3) and torch.equal(padded[:4], d) and not padded[4:].any()


def test_add_to_stream_token_and_pooled_and_rows():
    x = torch.zeros(4, 5, 3)
    tok = torch.ones(2, 3)
    y = add_to_stream(x, tok, strength=2.0)
    assert torch.equal(y[:, :2], torch.full((4, 2, 3), 2.0)) and not y[:, 2:].any()
    pooled = torch.tensor([1.0, 2.0, 3.0])
    rows = torch.tensor([True, False, True, False])
    y = add_to_stream(x, pooled, rows)
    assert torch.equal(y[0], pooled.expand(5, 3)) and not y[1].any() and not y[3].any()
    assert not x.any(), "the input must not be modified in place"
    with pytest.raises(ShapeMismatchError, match="wide"):
        add_to_stream(x, torch.ones(4))


def test_add_to_stream_keeps_dtype_and_strength_zero_is_identity():
    x = torch.randn(2, 3, 4, dtype=torch.float16)
    y = add_to_stream(x, torch.randn(4), strength=0.0)
    assert y.dtype == torch.float16 and torch.equal(y, x)


def test_cfg_rows_follow_cond_or_uncond_order():
    assert cfg_rows([1, 0], 4, "positive").tolist() == [False, False, True, True]
    assert cfg_rows([0, 1], 2, "positive").tolist() == [True, False]
    assert cfg_rows([0, 1], 2, "both") is None
    assert cfg_rows(None, 2, "positive") is None


def test_in_window_is_inclusive_and_descending():
    assert in_window(0.5, sigma_start=1.0, sigma_end=0.2)
    assert in_window(1.0, 1.0, 0.2) and in_window(0.2, 1.0, 0.2)
    assert not in_window(0.1, 1.0, 0.2) and not in_window(1.5, 1.0, 0.2)


def test_edit_conditioning_touches_tokens_and_pooled_only_as_asked():
    cond, pooled = torch.zeros(1, 6, 4), torch.zeros(1, 2)
    c2, p2, notes = edit_conditioning(cond, pooled, torch.ones(3, 4), None, torch.ones(2), 0.5)
    assert notes == [], "an edit of unknown layout aligns on the first rows, which is no partial edit to tell"
    assert torch.equal(c2[0, :3], torch.full((3, 4), 0.5)) and not c2[0, 3:].any()
    assert torch.equal(p2, torch.full((1, 2), 0.5))
    with pytest.raises(ShapeMismatchError):
        edit_conditioning(cond, pooled, torch.ones(3, 4), None, torch.ones(5), 1.0)
    with pytest.raises(ShapeMismatchError, match="another text encoder"):
        edit_conditioning(cond, pooled, torch.ones(3, 5), None, torch.ones(2), 1.0)


def test_capture_owns_what_it_recorded():
    """A stream output changed in place after the hook (ComfyUI adds ControlNet outputs to the image stream
    with +=) leaves the capture as it was, whether steps are summed or kept one by one."""
    for per_step in (False, True):
        buf = CaptureBuffer(pool="none", per_step=per_step)
        out = torch.ones(1, 3, 2)
        buf.record(out)
        out += 10
        assert torch.equal(buf.take()[0], torch.ones(1, 6)), f"per_step={per_step}"


def test_capture_buffer_averages_steps_over_positive_rows():
    buf = CaptureBuffer(pool="mean")
    buf.record(torch.ones(1, 3, 4), 0.9)
    buf.record(3 * torch.ones(1, 3, 4), 0.5)
    assert buf.steps == 2
    out, shape = buf.take()
    assert out.shape == (1, 4) and torch.allclose(out, torch.full((1, 4), 2.0)) and shape == [4]
    assert buf.steps == 0, "take() resets the buffer for the next run"
    tok = CaptureBuffer(pool="none", per_step=True)
    tok.record(torch.arange(6.0).reshape(1, 3, 2))
    tok.record(torch.arange(6.0).reshape(1, 3, 2))
    x, shape = tok.take()
    assert x.shape == (2, 6) and shape == [3, 2]
    with pytest.raises(SSAEError, match="window"):
        CaptureBuffer().take()
    buf.record(torch.ones(1, 3, 4))
    with pytest.raises(ShapeMismatchError, match=r"\[1, 4\] in None then \[1, 5\]"):
        buf.record(torch.ones(1, 3, 5))
