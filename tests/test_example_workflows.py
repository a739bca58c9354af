"""The example workflows form one loop: whatever one of them loads, another one writes."""
import json
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[1] / "example_workflows"
READS = {"SSAELoader": "ssae", "SSAETrain": "features"}
WRITES = {"SSAESave": "ssae", "SSAESaveFeatures": "features"}


def names(kinds: dict[str, str]) -> dict[str, set[str]]:
    """{"ssae"|"features": {file or set names}} that the workflows' nodes of these kinds name first."""
    out: dict[str, set[str]] = {"ssae": set(), "features": set()}
    for path in FOLDER.glob("*.json"):
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] in kinds:
                name = node["widgets_values"][0]
                out[kinds[node["type"]]].add(name.removesuffix(".safetensors"))
    return out


def test_every_ssae_and_feature_set_a_workflow_loads_is_written_by_another():
    reads, writes = names(READS), names(WRITES)
    assert reads["ssae"] and reads["features"]
    assert reads["ssae"] <= writes["ssae"] and reads["features"] <= writes["features"]


def test_the_files_are_what_the_builder_declares():
    """Each example file holds the graph scripts/build_example_workflows.py declares for it (which the browser test
    checks against a real front end): the same nodes in order, each widget value among the node's. A builder that
    no longer runs, or a graph changed without rebuilding its file, fails here in CI."""
    import sys
    sys.path.insert(0, str(FOLDER.parent / "scripts"))
    from build_example_workflows import WORKFLOWS
    assert sorted(WORKFLOWS) == sorted(p.stem for p in FOLDER.glob("*.json"))
    for name, spec in WORKFLOWS.items():
        nodes = sorted(json.loads((FOLDER / f"{name}.json").read_text())["nodes"], key=lambda n: n["id"])
        assert [n["type"] for n in nodes] == [cls for cls, _ in spec.values()], name
        for node, (cls, inputs) in zip(nodes, spec.values()):
            for key, value in inputs.items():
                if not isinstance(value, tuple):
                    assert value in node.get("widgets_values", []), (name, cls, key, value)
