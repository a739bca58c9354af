"""The project's own error types: every message names the problem and the fix."""


class SSAEError(ValueError):
    """Base class of every error `ssae` raises on bad input."""


class VocabularyError(SSAEError):
    """An unknown or ambiguous concept, or a malformed vocabulary."""


class FeatureFileError(SSAEError):
    """A feature set that is missing metadata, malformed, truncated or non-finite."""


class ModelFileError(SSAEError):
    """An SSAE file that is corrupt, of an unknown format version, or inconsistent."""


class ShapeMismatchError(SSAEError):
    """Features, an SSAE and a host model whose sizes or sites do not agree."""


class PathError(SSAEError):
    """A file or folder name that would leave the folder it must stay in."""
