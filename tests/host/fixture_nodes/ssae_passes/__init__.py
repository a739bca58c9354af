"""A test-only ComfyUI node: a model that logs its calls (the CFG chunks of each, as `cond_or_uncond` names them) to
a JSON-lines file in the output folder and, with low_memory, samples as a machine short of memory does: ComfyUI's
samplers then see 0 bytes free (model loading still sees the real figure) and run the positive and negative
prompts as separate calls. Outside such a sampling run the samplers see what model_management says."""
import json
import os
import threading
import types

import comfy.model_management
import comfy.patcher_extension as ext
import comfy.samplers
import folder_paths

_LOW = threading.Event()


class _SamplersView(types.ModuleType):
    """comfy.model_management as comfy.samplers sees it: free memory 0 while a low-memory run samples."""

    def __getattr__(self, name):
        return getattr(comfy.model_management, name)

    def get_free_memory(self, *args, **kwargs):
        return 0 if _LOW.is_set() else comfy.model_management.get_free_memory(*args, **kwargs)


comfy.samplers.model_management = _SamplersView("model_management_for_samplers")


class SSAETestPasses:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "log": ("STRING", {"default": "passes.jsonl"}),
                             "low_memory": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "wrap"
    CATEGORY = "testing"

    def wrap(self, model, log, low_memory):
        path = os.path.join(folder_paths.get_output_directory(), log)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        m = model.clone()

        def logged(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kw):
            with open(path, "a") as f:
                f.write(json.dumps({"cond_or_uncond": list(transformer_options["cond_or_uncond"]),
                                    "sigma": float(t[0]), "context_rows": c_crossattn.shape[1]}) + "\n")
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kw)

        def low(executor, *args, **kwargs):
            _LOW.set()
            try:
                return executor(*args, **kwargs)
            finally:
                _LOW.clear()

        ext.add_wrapper_with_key(ext.WrappersMP.APPLY_MODEL, "ssae_test_passes", logged, m.model_options,
                                 is_model_options=True)
        if low_memory:
            ext.add_wrapper_with_key(ext.WrappersMP.OUTER_SAMPLE, "ssae_test_passes", low, m.model_options,
                                     is_model_options=True)
        return (m,)


NODE_CLASS_MAPPINGS = {"SSAETestPasses": SSAETestPasses}
