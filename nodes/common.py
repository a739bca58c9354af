"""Socket types, the `ssae` model folder and host helpers shared by the node modules."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager

import folder_paths
from comfy_api.latest import io, ui

from ssae.errors import SSAEError
from ssae.store import MANIFEST

CATEGORY = "SSAE"
SSAEType = io.Custom("SSAE")
ConceptsType = io.Custom("SSAE_CONCEPTS")
FeaturesType = io.Custom("SSAE_FEATURES")
SampleType = io.Custom("SSAE_SAMPLE")
FEATURES_DIR = "ssae_features"
log = logging.getLogger(__name__)


def context_input() -> io.String.Input:
    """The optional prompt an edit is made for (SSAEApplyConditioning, SSAEPatchModel)."""
    return io.String.Input("context", default="", optional=True,
                           tooltip="The prompt being edited, or its concepts ('blond, hat, ...'): the edit is then "
                                   "exact for it. Empty: averaged over prompts that hold the removed concepts.")


def register_model_folder() -> None:
    """models/ssae, also reachable as the `ssae` key of extra_model_paths.yaml."""
    if "ssae" not in folder_paths.folder_names_and_paths:
        folder = os.path.join(folder_paths.models_dir, "ssae")
        folder_paths.folder_names_and_paths["ssae"] = ([folder], {".safetensors"})
    os.makedirs(folder_paths.get_folder_paths("ssae")[0], exist_ok=True)


def features_root() -> str:
    return os.path.join(folder_paths.get_output_directory(), FEATURES_DIR)


def feature_sets() -> list[str]:
    """Feature-set folders under output/ssae_features (those with a manifest)."""
    root = features_root()
    if not os.path.isdir(root):
        return []
    return sorted(d for d in os.listdir(root)
                  if not d.startswith(".") and os.path.isfile(os.path.join(root, d, MANIFEST)))


@contextmanager
def node_errors():
    """Turn the library's errors into one-line node errors (no tensor stack trace for the user)."""
    try:
        yield
    except SSAEError as e:
        raise ValueError(f"SSAE: {e}") from None


def mmdit_geometry(model) -> tuple[int, int]:
    """(depth, hidden size) of a MODEL's MMDiT; a clear error for a model that is not SD3/SD3.5."""
    dm = model.get_model_object("diffusion_model")
    blocks = getattr(dm, "joint_blocks", None)
    if blocks is None:
        raise SSAEError(f"this model ({type(dm).__name__}) has no MMDiT joint blocks: "
                        "SSAE block patches need an SD3 / SD3.5 model")
    return len(blocks), int(dm.x_embedder.proj.weight.shape[0])


def show_notes(text: str, notes: list[str]) -> ui.PreviewText:
    """Node text: what the node did, then what it left undone (also logged, for runs without a front end)."""
    for note in notes:
        log.warning("SSAE: %s", note)
    return ui.PreviewText("\n".join([text] + [f"warning: {n}" for n in notes]))


def sigma_window(model, start_percent: float, end_percent: float) -> tuple[float, float]:
    ms = model.get_model_object("model_sampling")
    return float(ms.percent_to_sigma(start_percent)), float(ms.percent_to_sigma(end_percent))
