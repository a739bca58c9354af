"""Supervised sparse auto-encoders (decoder-only, concept-labelled) for Stable Diffusion 3.5 features."""
from .errors import FeatureFileError, ModelFileError, PathError, ShapeMismatchError, SSAEError, VocabularyError
from .model import DecoderConfig
from .preprocess import PreprocessConfig
from .presets import PRESETS, Recipe, TrainConfig
from .ssae_file import SSAE
from .store import FeatureSet, append_features, count_samples, load_features, save_features
from .train import train
from .vocab import Vocabulary, split_heldout_pairs


def _version() -> str:
    """The version pyproject.toml states: from the installed metadata, or read off the file in a checkout that
    ComfyUI loads as a custom node without installing it."""
    from importlib import metadata
    try:
        return metadata.version("comfyui-ssae")
    except metadata.PackageNotFoundError:
        import re
        from pathlib import Path
        text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
        return re.search(r'^version = "([^"]+)"', text, re.M).group(1)


__version__ = _version()
__all__ = ["SSAE", "FeatureSet", "Vocabulary", "Recipe", "DecoderConfig", "TrainConfig", "PreprocessConfig", "PRESETS",
           "train", "load_features", "save_features", "append_features", "count_samples", "split_heldout_pairs",
           "SSAEError", "VocabularyError", "FeatureFileError", "ModelFileError", "ShapeMismatchError", "PathError"]
