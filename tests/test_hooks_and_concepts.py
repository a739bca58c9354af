"""The joint-block hook (ComfyUI's replace-patch protocol, faked) and concept-choice parsing."""
import pytest
import torch

from ssae.capture import CaptureBuffer
from ssae.concepts import ConceptChoice
from ssae.errors import ShapeMismatchError, SSAEError, VocabularyError
from ssae.hooks import BlockHook
from ssae.steer import StreamEdit
from ssae.vocab import Vocabulary


def block(args):
    """Stands in for a joint block: returns its inputs plus one."""
    return {"img": args["img"] + 1, "txt": None if args["txt"] is None else args["txt"] + 1}


def call(hook, img, txt, sigma=0.5, cond_or_uncond=(1, 0)):
    args = {"img": img, "txt": txt, "vec": None,
            "transformer_options": {"sigmas": torch.tensor([sigma] * img.shape[0]),
                                    "cond_or_uncond": list(cond_or_uncond)}}
    return hook(args, {"original_block": block})


def test_edit_applies_to_positive_rows_inside_window_only():
    img, txt = torch.zeros(4, 6, 3), torch.zeros(4, 2, 3)
    hook = BlockHook("img", StreamEdit(torch.tensor([1.0, 2.0, 3.0]), 2.0), sigma_window=(0.8, 0.2))
    out = call(hook, img, txt)
    # cond_or_uncond [1, 0]: rows 0-1 negative, rows 2-3 positive
    assert torch.equal(out["img"][2:], torch.tensor([3.0, 5.0, 7.0]).expand(2, 6, 3))
    assert torch.equal(out["img"][:2], torch.ones(2, 6, 3))
    assert torch.equal(out["txt"], txt + 1)
    outside = call(hook, img, txt, sigma=0.9)
    assert torch.equal(outside["img"], img + 1)


def test_strength_zero_is_the_unpatched_block():
    img, txt = torch.randn(2, 5, 3), torch.randn(2, 4, 3)
    hook = BlockHook("txt", StreamEdit(torch.randn(4, 3), 0.0), apply_to="both")
    out = call(hook, img, txt)
    assert torch.equal(out["txt"], txt + 1) and torch.equal(out["img"], img + 1)


def test_the_edit_is_prepared_once_per_batch_layout(monkeypatch):
    """Steps of one layout (CFG order, batch, tokens, device, dtype) reuse one addend: a step pays one add."""
    made = []
    real = StreamEdit.addend
    monkeypatch.setattr(StreamEdit, "addend", lambda self, shape, *a: made.append(shape) or real(self, shape, *a))
    delta = torch.tensor([1.0, 2.0, 3.0])
    hook = BlockHook("img", StreamEdit(delta, 0.5))
    img = torch.zeros(2, 4, 3)
    for sigma in (0.9, 0.5, 0.1):  # three steps of one run
        out = call(hook, img, None, sigma=sigma)
        assert torch.equal(out["img"][1], 1 + 0.5 * delta.expand(4, 3)) and torch.equal(out["img"][0], img[0] + 1)
    assert len(made) == 1
    call(hook, img, None, cond_or_uncond=(0, 1))  # the positive row moved
    half = call(hook, img.half(), None, cond_or_uncond=(0, 1))["img"]
    assert half.dtype == torch.float16 and torch.equal(half[0], (1 + 0.5 * delta).half().expand(4, 3))
    assert len(made) == 3


def test_hooks_chain_onto_a_previous_patch():
    first = BlockHook("img", StreamEdit(torch.ones(3)), apply_to="both")
    second = BlockHook("txt", StreamEdit(torch.ones(2, 3)), apply_to="both", previous=first)
    out = call(second, torch.zeros(2, 4, 3), torch.zeros(2, 2, 3))
    assert torch.equal(out["img"], torch.full((2, 4, 3), 2.0)), "the earlier patch still runs"
    assert torch.equal(out["txt"], torch.full((2, 2, 3), 2.0))


def test_capture_records_positive_rows_and_missing_stream_is_a_clear_error():
    buf = CaptureBuffer("mean")
    hook = BlockHook("img", capture=buf)
    call(hook, torch.zeros(2, 4, 3), None, cond_or_uncond=(0, 1))
    x, shape = buf.take()
    assert x.shape == (1, 3) and shape == [3]
    with pytest.raises(ShapeMismatchError, match="pre_only"):
        call(BlockHook("txt", capture=CaptureBuffer()), torch.zeros(2, 4, 3), None)


VOCAB = Vocabulary({"hair": ["A blond girl", "A brunette girl"], "hat": ["and a hat", "and a baseball cap"]})


def test_concept_choice_forms():
    c = ConceptChoice.parse('{"mode": "edit", "add": {"blond": 1.0}, "remove": {"brunette": 0.5}}').resolved(VOCAB)
    assert c.add == {"A blond girl": 1.0} and c.remove == {"A brunette girl": 0.5}
    t = ConceptChoice.parse("blond, -brunette, baseball:0.5", mode="compose").resolved(VOCAB)
    assert t.mode == "compose" and t.add == {"A blond girl": 1.0, "and a baseball cap": 0.5}
    assert t.remove == {"A brunette girl": 1.0}
    assert ConceptChoice.parse(c.to_json()) == c
    assert ConceptChoice.parse({"add": ["hat"]}).add == {"hat": 1.0}
    assert ConceptChoice.parse("").add == {}


def test_concept_choice_errors_name_the_problem():
    with pytest.raises(VocabularyError, match="unknown concept 'red hair'.*vocabulary does not have"):
        ConceptChoice.parse("red hair").resolved(VOCAB)
    with pytest.raises(SSAEError, match="weight"):
        ConceptChoice.parse("blond:lots")
    with pytest.raises(SSAEError, match="mode"):
        ConceptChoice.parse('{"mode": "mix"}')
    with pytest.raises(SSAEError, match="JSON"):
        ConceptChoice.parse("{not json")
