"""Supervised sparse auto-encoders (decoder-only, concept-labelled) for Stable Diffusion 3.5 features."""
from .errors import FeatureFileError, ModelFileError, ShapeMismatchError, SSAEError, VocabularyError
from .model import DecoderConfig
from .preprocess import PreprocessConfig
from .presets import PRESETS, Recipe, TrainConfig
from .ssae_file import SSAE
from .store import FeatureSet, append_features, count_samples, load_features, save_features
from .train import train
from .vocab import Vocabulary, split_heldout_pairs

__version__ = "0.1.0"
__all__ = ["SSAE", "FeatureSet", "Vocabulary", "Recipe", "DecoderConfig", "TrainConfig", "PreprocessConfig", "PRESETS",
           "train", "load_features", "save_features", "append_features", "count_samples", "split_heldout_pairs",
           "SSAEError", "VocabularyError", "FeatureFileError", "ModelFileError", "ShapeMismatchError"]
