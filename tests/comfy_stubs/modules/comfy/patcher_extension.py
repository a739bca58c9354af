"""Stand-in `comfy.patcher_extension`: wrappers keyed by type and key in (model) options, and the executor chain
that runs them around a call (each wrapper gets an executor that calls the next one, the last the call itself)."""
from __future__ import annotations

from collections.abc import Callable


class WrappersMP:
    OUTER_SAMPLE = "outer_sample"
    CALC_COND_BATCH = "calc_cond_batch"
    APPLY_MODEL = "apply_model"
    DIFFUSION_MODEL = "diffusion_model"


def _options(options: dict, is_model_options: bool) -> dict:
    return options.setdefault("transformer_options", {}) if is_model_options else options


def add_wrapper_with_key(wrapper_type: str, key: str, wrapper: Callable, transformer_options: dict,
                         is_model_options=False):
    wrappers = _options(transformer_options, is_model_options).setdefault("wrappers", {})
    wrappers.setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)


def get_wrappers_with_key(wrapper_type: str, key: str, transformer_options: dict, is_model_options=False):
    opts = transformer_options.get("transformer_options", {}) if is_model_options else transformer_options
    return list(opts.get("wrappers", {}).get(wrapper_type, {}).get(key, []))


def get_all_wrappers(wrapper_type: str, transformer_options: dict, is_model_options=False):
    opts = transformer_options.get("transformer_options", {}) if is_model_options else transformer_options
    return [w for ws in opts.get("wrappers", {}).get(wrapper_type, {}).values() for w in ws]


class Chain:
    """Runs `wrappers` around `call`: wrapper i gets a Chain at i + 1 as its executor."""

    def __init__(self, call: Callable, wrappers: list[Callable], i: int = 0):
        self.call, self.wrappers, self.i = call, wrappers, i

    def __call__(self, *args, **kwargs):
        return Chain(self.call, self.wrappers, self.i + 1).execute(*args, **kwargs)

    def execute(self, *args, **kwargs):
        if self.i == len(self.wrappers):
            return self.call(*args, **kwargs)
        return self.wrappers[self.i](self, *args, **kwargs)
