"""Running a V3 node as ComfyUI's executor would: widget defaults for inputs not given, lists for an input-list node,
the hidden unique id; and the checks that a schema and its `execute` agree."""
from __future__ import annotations

import inspect

from comfy_api.latest import io


def check_schema(cls: type[io.ComfyNode]) -> io.Schema:
    """The node's schema, after checking that every input is a parameter of `execute` and back, that optional
    inputs have a default there (ComfyUI leaves an unconnected optional input out), and that every input has a
    tooltip."""
    schema = cls.define_schema()
    params = {n: p for n, p in inspect.signature(cls.execute).parameters.items() if n not in ("cls", "self")}
    ids = [i.id for i in schema.inputs]
    assert sorted(ids) == sorted(params), f"{schema.node_id}: inputs {ids} but execute takes {list(params)}"
    for i in schema.inputs:
        if i.optional:
            assert params[i.id].default is not inspect.Parameter.empty, f"{schema.node_id}.{i.id} needs a default"
        assert i.tooltip, f"{schema.node_id}.{i.id} has no tooltip"
    assert schema.node_id == cls.__name__ and schema.category == "SSAE" and schema.description
    return schema


def run_node(cls: type[io.ComfyNode], **inputs) -> io.NodeOutput:
    """`execute` with `inputs`, widget defaults for the widgets not given, as lists for an input-list node."""
    schema = check_schema(cls)
    values = {}
    for i in schema.inputs:
        if i.id in inputs:
            values[i.id] = inputs.pop(i.id)
        elif i.default is not None:
            values[i.id] = i.default
        elif not i.optional:
            raise AssertionError(f"{schema.node_id}: required input {i.id!r} not given and it has no default")
    assert not inputs, f"{schema.node_id} has no inputs {sorted(inputs)}"
    if schema.is_input_list:
        values = {k: v if isinstance(v, list) else [v] for k, v in values.items()}
    cls.hidden = io.HiddenHolder(unique_id="7") if schema.hidden else None
    out = cls.execute(**values)
    assert isinstance(out, io.NodeOutput)
    assert len(out.args) == len(schema.outputs), f"{schema.node_id}: {len(out.args)} outputs for {schema.outputs}"
    return out


def ui_text(out: io.NodeOutput) -> str:
    """The text a node shows (its PreviewText, or the text of a ui dict), '' when it shows none."""
    if out.ui is None:
        return ""
    return "\n".join(out.ui.get("text", ())) if isinstance(out.ui, dict) else out.ui.value
