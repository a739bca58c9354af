"""A test-only ComfyUI node: SD3 conditioning as ComfyUI gives it with a T5 encoder loaded (77 CLIP rows, then
77 T5 rows dense over all 4096 channels), where a real T5-XXL (4.7B parameters) is too large for the tests.
The T5 rows are a fixed function of the prompt's CLIP rows, so that they carry the prompt's concepts."""
import torch


class SSAETestAppendT5Rows:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "testing"

    def append(self, conditioning):
        out = []
        for cond, extra in conditioning:
            signs = torch.randint(0, 2, (cond.shape[-1],), generator=torch.Generator().manual_seed(0)) * 2 - 1
            clip = cond[..., :768].repeat(1, 1, -(-cond.shape[-1] // 768))[..., :cond.shape[-1]]
            out.append([torch.cat([cond, torch.tanh(clip * signs.to(cond))], 1), extra])
        return (out,)


NODE_CLASS_MAPPINGS = {"SSAETestAppendT5Rows": SSAETestAppendT5Rows}
