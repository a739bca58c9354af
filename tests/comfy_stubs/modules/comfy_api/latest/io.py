"""Stand-in `comfy_api.latest.io`: node schemas (with ComfyUI 0.3.64's constructor signatures for the inputs the
nodes use, so that an option ComfyUI does not take fails here too), node outputs and the node base class."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Input:
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 extra_dict=None):
        self.id, self.display_name, self.optional, self.tooltip, self.lazy = id, display_name, optional, tooltip, lazy
        self.default = None


class WidgetInput(Input):
    def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                 default: Any = None, socketless: bool = None, widget_type: str = None, force_input: bool = None,
                 extra_dict=None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.default = default


class Output:
    def __init__(self, id: str = None, display_name: str = None, tooltip: str = None, is_output_list=False):
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name, tooltip, is_output_list


class _Type:
    io_type = "*"

    class Input(Input):
        pass

    class Output(Output):
        pass


def _typed(name: str, base: type = _Type) -> type:
    """A socket type whose Input and Output know their type name."""
    kind = type(name, (base,), {"io_type": name})
    kind.Input = type("Input", (base.Input,), {"io_type": name})
    kind.Output = type("Output", (base.Output,), {"io_type": name})
    return kind


def Custom(io_type: str) -> type:
    return _typed(io_type)


Conditioning, Model, Latent, Image, Clip = (_typed(n) for n in ("CONDITIONING", "MODEL", "LATENT", "IMAGE", "CLIP"))


class Int(_typed("INT")):
    class Input(WidgetInput):
        io_type = "INT"

        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     default: int = None, min: int = None, max: int = None, step: int = None,
                     control_after_generate: bool = None, display_mode=None, socketless: bool = None,
                     force_input: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step = min, max, step


class Float(_typed("FLOAT")):
    class Input(WidgetInput):
        io_type = "FLOAT"

        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     default: float = None, min: float = None, max: float = None, step: float = None,
                     round: float = None, display_mode=None, socketless: bool = None, force_input: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step = min, max, step


class String(_typed("STRING")):
    class Input(WidgetInput):
        io_type = "STRING"

        def __init__(self, id: str, display_name: str = None, optional=False, tooltip: str = None, lazy: bool = None,
                     multiline=False, placeholder: str = None, default: str = None, dynamic_prompts: bool = None,
                     socketless: bool = None, force_input: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.multiline = multiline


class Combo(_typed("COMBO")):
    class Input(WidgetInput):
        io_type = "COMBO"

        def __init__(self, id: str, options: list = None, display_name: str = None, optional=False,
                     tooltip: str = None, lazy: bool = None, default: Any = None, control_after_generate: bool = None,
                     upload=None, image_folder=None, remote=None, socketless: bool = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)
            self.options = options


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    hidden: list[Hidden] = field(default_factory=list)
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    not_idempotent: bool = False


class HiddenHolder:
    def __init__(self, unique_id: str = None, prompt: Any = None, extra_pnginfo: Any = None):
        self.unique_id, self.prompt, self.extra_pnginfo = unique_id, prompt, extra_pnginfo


class ComfyNode:
    hidden: HiddenHolder | None = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs) -> Any:
        return None


class NodeOutput:
    def __init__(self, *args: Any, ui=None, expand: dict = None, block_execution: str = None):
        self.args, self.ui = args, ui

    @property
    def result(self):
        return self.args if self.args else None
