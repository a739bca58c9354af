"""A concept choice: which concepts to add and remove (edit), or which to mix (compose), with weights.

It travels as a plain JSON value so that a workflow file stores it and a widget can drive it:
  {"mode": "edit", "add": {"blond": 1.0}, "remove": {"brunette": 1.0}}
  {"mode": "compose", "add": {"blond": 1, "on horseback in the forest": 1, "and a hat": 0.5}}
A short text form is accepted too: "blond, -brunette, hat:0.5" (a leading '-' removes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch

from .errors import SSAEError, VocabularyError
from .ssae_file import SSAE
from .vocab import Vocabulary

Mode = Literal["edit", "compose"]


class EditDelta(NamedTuple):
    """An edit in an SSAE's raw feature space, and what of its context it could not read (for the node to show)."""

    features: torch.Tensor
    notes: list[str]


@dataclass(frozen=True)
class ConceptChoice:
    mode: Mode = "edit"
    add: dict[str, float] = field(default_factory=dict)
    remove: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str | dict, mode: Mode | None = None) -> ConceptChoice:
        """From the JSON widget value or the short text form; `mode` overrides the value's own."""
        if isinstance(value, str):
            text = value.strip()
            value = _json_or_text(text) if text else {}
        if not isinstance(value, dict):
            raise SSAEError(f"a concept choice must be a JSON object like {{'add': {{'blond': 1}}}}, got {value!r}")
        add, remove = _weights(value.get("add", {}), "add"), _weights(value.get("remove", {}), "remove")
        m = mode or value.get("mode", "edit")
        if m not in ("edit", "compose"):
            raise SSAEError(f"unknown mode {m!r}: use 'edit' or 'compose'")
        return cls(m, add, remove)

    def resolved(self, vocabulary: Vocabulary) -> ConceptChoice:
        """The same choice with full concept names; an unknown or ambiguous name is an error naming it."""
        try:
            return ConceptChoice(self.mode, {vocabulary.resolve(k): v for k, v in self.add.items()},
                                 {vocabulary.resolve(k): v for k, v in self.remove.items()})
        except VocabularyError as e:
            raise VocabularyError(f"{e}. The SSAE's vocabulary does not have this concept: choose one it knows, "
                                  "or load the SSAE the workflow was made with") from None

    def to_json(self) -> str:
        return json.dumps({"mode": self.mode, "add": self.add, "remove": self.remove})

    def delta(self, ssae: SSAE, context: str = "") -> EditDelta:
        """[F] edit vector in the SSAE's raw feature space (compose at a block: the effect of adding). `context`,
        the prompt being edited or its concepts ('blond, hat, ...'), makes it exact for that prompt; empty, it
        is the mean over contexts that hold the removed concepts. Its notes say what of the context was not
        recognised (`read_context`)."""
        c = self.resolved(ssae.vocabulary)
        concepts, notes = read_context(ssae.vocabulary, context) if context.strip() else (None, [])
        return EditDelta(ssae.delta(add=c.add, remove=c.remove, context=concepts), notes)

    def features(self, ssae: SSAE) -> torch.Tensor:
        """[F] decoded features of the mix (compose mode): removed concepts enter with negative weight."""
        c = self.resolved(ssae.vocabulary)
        weights = dict(c.add)
        for k, v in c.remove.items():
            weights[k] = weights.get(k, 0.0) - v
        if not weights:
            raise SSAEError("compose needs at least one concept: add some concepts to the choice")
        return ssae.compose(weights)


def read_context(vocabulary: Vocabulary, text: str) -> tuple[list[str], list[str]]:
    """The concepts of an edit's context (concept names, or a prompt whose phrases the vocabulary holds), and a
    note when some categories have none: the edit then takes the prompt to have none of them, which is exact only
    if it has none (a prompt's words the vocabulary does not hold are not read)."""
    concepts = vocabulary.parse_labels(text)
    named = {vocabulary.category_of(c) for c in concepts}
    missing = [cat for cat in vocabulary.categories if cat not in named]
    if not missing:
        return concepts, []
    return concepts, [f"context {text!r}: recognised {', '.join(concepts)}; nothing of {', '.join(missing)}, so the "
                      f"edit is made for a prompt without them. If the prompt has them, name its concepts in the "
                      f"context (e.g. '{', '.join(vocabulary.categories[cat][0] for cat in vocabulary.categories)}')"]


def _json_or_text(text: str) -> dict:
    if text[0] in "{[":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise SSAEError(f"concept choice is not valid JSON ({e})") from e
    add, remove = {}, {}
    for item in filter(None, (t.strip() for t in text.replace("\n", ",").split(","))):
        name, _, w = item.partition(":")
        target = remove if name.startswith("-") else add
        try:
            target[name.lstrip("-").strip()] = float(w) if w.strip() else 1.0
        except ValueError:
            raise SSAEError(f"bad weight in {item!r}: write name:0.5") from None
    return {"add": add, "remove": remove}


def _weights(v, what: str) -> dict[str, float]:
    if isinstance(v, list):
        v = {k: 1.0 for k in v}
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise SSAEError(f"'{what}' must map concept names to weights, got {v!r}")
    try:
        return {k: float(w) for k, w in v.items()}
    except (TypeError, ValueError):
        raise SSAEError(f"'{what}' weights must be numbers, got {v!r}") from None
