"""ssae.layout: CLIP and T5 rows of SD3 conditioning, found, recorded in shapes and mapped between layouts."""

import pytest
import torch

from ssae import ShapeMismatchError
from ssae.layout import (
    TokenLayout,
    conditioning_features,
    detect_layout,
    layout_notes,
    layout_of_shape,
    remap_rows,
)


def sd3_conditioning(n_clip: int, n_t5: int, width: int = 4096, seed: int = 0) -> torch.Tensor:
    """[1, n_clip + n_t5, width] as ComfyUI builds it: CLIP rows zero beyond 2048 channels, T5 rows dense."""
    g = torch.Generator().manual_seed(seed)
    clip = torch.nn.functional.pad(torch.randn(1, n_clip, 2048, generator=g), (0, width - 2048))
    return torch.cat([clip, torch.randn(1, n_t5, width, generator=g)], 1)


def test_layout_is_read_off_the_zero_channels_of_clip_rows():
    assert detect_layout(sd3_conditioning(77, 77)) == TokenLayout(77, 77)
    assert detect_layout(sd3_conditioning(77, 0)) == TokenLayout(77, 0)
    assert detect_layout(sd3_conditioning(154, 256)) == TokenLayout(154, 256), "a long prompt: two CLIP chunks"
    assert detect_layout(sd3_conditioning(0, 77)) == TokenLayout(0, 77), "T5 alone"
    assert detect_layout(torch.randn(2, 8, 64)) == TokenLayout(8, 0), "narrower than CLIP: all CLIP"
    clip_l_only = torch.nn.functional.pad(torch.randn(1, 77, 768), (0, 4096 - 768))
    assert detect_layout(clip_l_only) == TokenLayout(77, 0)


def test_shapes_record_the_layout_and_older_shapes_are_recognised_by_row_count():
    x, shape = conditioning_features(sd3_conditioning(77, 77), torch.ones(1, 2048))
    assert shape == {"clip": [77, 4096], "t5": [77, 4096], "pooled_output": [2048]}
    assert x.shape == (1, 154 * 4096 + 2048) and torch.equal(x[0, -2048:], torch.ones(2048))
    assert conditioning_features(sd3_conditioning(77, 0), None)[1] == {"clip": [77, 4096]}
    assert layout_of_shape(shape) == TokenLayout(77, 77)
    assert layout_of_shape({"cond": [333, 4096], "pooled_output": [2048]}) == TokenLayout(77, 256), "diffusers"
    assert layout_of_shape({"cond": [154, 4096], "pooled_output": [2048]}) == TokenLayout(77, 77)
    assert layout_of_shape([77, 4096]) == TokenLayout(77, 0)
    assert layout_of_shape({"cond": [8, 64], "pooled_output": [32]}) is None
    assert layout_of_shape([1366016]) is None


def test_rows_move_clip_to_clip_and_t5_to_t5():
    x = torch.arange(333.0)[:, None].expand(333, 3)  # row i holds i
    out = remap_rows(x, TokenLayout(77, 256), TokenLayout(77, 77))
    assert out.shape == (154, 3) and torch.equal(out[:, 0], torch.arange(154.0)), "the first 77 T5 rows"
    back = remap_rows(out, TokenLayout(77, 77), TokenLayout(77, 256))
    assert torch.equal(back[:154, 0], torch.arange(154.0)) and not back[154:].any(), "extra T5 rows stay unedited"
    clip_only = remap_rows(x, TokenLayout(77, 256), TokenLayout(77, 0))
    assert torch.equal(clip_only[:, 0], torch.arange(77.0))
    assert layout_notes(TokenLayout(77, 256), TokenLayout(77, 0)) == [
        "the SSAE's T5 rows are dropped: the conditioning has 0 T5 rows (77 CLIP + 0 T5 rows)"]
    assert layout_notes(TokenLayout(77, 0), TokenLayout(77, 77)) == [
        "all 77 of the conditioning's T5 rows are left unedited: the SSAE was trained without T5 rows "
        "(77 CLIP + 0 T5 rows)"]
    assert layout_notes(TokenLayout(77, 77), TokenLayout(77, 77)) == [] and layout_notes(None, TokenLayout(9, 0)) == []
    two_chunks = remap_rows(out, TokenLayout(77, 77), TokenLayout(154, 77))
    assert torch.equal(two_chunks[:77, 0], torch.arange(77.0)) and not two_chunks[77:154].any()
    assert torch.equal(two_chunks[154:, 0], torch.arange(77.0, 154.0))


def test_unknown_layouts_align_on_the_first_rows_and_nothing_to_map_is_refused():
    x = torch.ones(8, 2)
    assert torch.equal(remap_rows(x, None, TokenLayout(10, 0))[:, 0], torch.tensor([1.0] * 8 + [0.0] * 2))
    assert torch.equal(remap_rows(x, None, TokenLayout(0, 4))[:, 0], torch.ones(4))
    with pytest.raises(ShapeMismatchError, match="0 CLIP \\+ 256 T5 rows.*77 CLIP \\+ 0 T5 rows"):
        remap_rows(torch.ones(256, 2), TokenLayout(0, 256), TokenLayout(77, 0))


def test_import_diffusers_writes_the_papers_rows_in_comfyuis_layout(tmp_path, capsys):
    """A set stored as the reference code stores SD3.5's conditioning (flat: 333 rows x 4096, then pooled 2048)
    becomes 77 CLIP + 77 T5 rows (or CLIP alone), with its labels, splits and prompts."""
    from builders import VOCAB

    import ssae
    from ssae.cli import main
    x = torch.arange(333.0)[None, :, None].expand(3, 333, 4096).reshape(3, -1)
    x = torch.cat([x, torch.full((3, 2048), -1.0)], 1).half()
    labels = [["blond", "boat"], ["hat"], ["left"]]
    src = ssae.save_features(tmp_path / "paper.safetensors", x, VOCAB, labels, ["train", "test", "train"],
                             ["p0", "p1", "p2"], site="sd35.encode_prompt")
    assert main(["import-diffusers", str(src), str(tmp_path / "comfy")]) == 0
    assert "77 CLIP + 77 T5 rows" in capsys.readouterr().out
    fs = ssae.load_features(tmp_path / "comfy")
    assert fs.feature_shape == {"clip": [77, 4096], "t5": [77, 4096], "pooled_output": [2048]}
    assert fs.site == "conditioning" and fs.split == ["train", "test", "train"] and fs.prompts == ["p0", "p1", "p2"]
    assert fs.labels[0] == ["A blond girl", "on a boat"]
    y = fs.load()
    assert torch.equal(y[:, :154 * 4096].reshape(3, 154, 4096)[:, :, 0], torch.arange(154.0).expand(3, 154))
    assert torch.equal(y[:, -2048:], torch.full((3, 2048), -1.0))
    assert main(["import-diffusers", str(src), str(tmp_path / "clip"), "--t5-rows", "0"]) == 0
    assert ssae.load_features(tmp_path / "clip").feature_shape == {"clip": [77, 4096], "pooled_output": [2048]}
    assert main(["import-diffusers", str(src), str(tmp_path / "comfy")]) == 2, "an existing folder is refused"
    odd = ssae.save_features(tmp_path / "odd.safetensors", torch.ones(1, 10), VOCAB, [["hat"]])
    assert main(["import-diffusers", str(odd), str(tmp_path / "o")]) == 2
    assert "no SD3 conditioning of a known layout" in capsys.readouterr().err
