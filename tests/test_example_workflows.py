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
