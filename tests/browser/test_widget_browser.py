"""The concept widget in a real ComfyUI front end (headless Chromium), run through `node --test`.

The test itself is tests/browser/e2e.test.mjs; it starts ComfyUI with tests/browser/comfy_host.py.
Needs COMFYUI_PATH (a ComfyUI checkout; COMFYUI_PYTHON: its interpreter, default this one; COMFYUI_STUBS:
extra PYTHONPATH for the host), /usr/bin/chromium (`apt-get install -y chromium`),
node, and node_modules/playwright-core (`npm install` in the repository root). Skipped, with the missing
piece named, when any of them is absent. Writes tests/artifacts/widget.png.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))


def _missing() -> str | None:
    comfy = os.environ.get("COMFYUI_PATH")
    if not comfy:
        return "COMFYUI_PATH is unset: set it to a ComfyUI checkout (and COMFYUI_PYTHON to its venv's python)"
    if not (Path(comfy) / "main.py").is_file():
        return f"COMFYUI_PATH={comfy} is not a ComfyUI checkout (no main.py)"
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)"
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (ROOT / "node_modules" / "playwright-core").is_dir():
        return "node_modules/playwright-core is missing: run `npm install` in the repository root"
    return None


def test_concept_widget_in_browser():
    reason = _missing()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ)
    env.setdefault("COMFYUI_PYTHON", sys.executable)
    env["SSAE_E2E_REQUIRE"] = "1"  # checked above: the node test must run, not skip
    env.pop("SSAE_E2E_URL", None)
    r = subprocess.run(["node", "--test", "--test-reporter=spec", "tests/browser/e2e.test.mjs"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"browser test failed (exit {r.returncode}):\n{out[-8000:]}"
    assert not re.search(r"\bpass 0$|\bskipped [1-9]", out, re.M), f"browser test did not run:\n{out[-4000:]}"
    assert (ROOT / "tests" / "artifacts" / "widget.png").is_file()
    assert_workflows_run_as_declared(json.loads((ROOT / "tests" / "artifacts" / "workflow_prompts.json").read_text()))


def assert_workflows_run_as_declared(prompts: dict) -> None:
    """What the front end sends for each example workflow is the graph its builder declares: every node, each
    widget value in its place (a widget the front end adds, such as a seed's control, shifts none) and each link."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_example_workflows import WORKFLOWS
    assert sorted(prompts) == sorted(WORKFLOWS)
    for name, spec in WORKFLOWS.items():
        ids = {key: str(i + 1) for i, key in enumerate(spec)}
        sent = prompts[name]
        assert sorted(sent) == sorted(ids.values()), name
        for key, (cls, inputs) in spec.items():
            node = sent[ids[key]]
            assert node["class_type"] == cls, (name, key)
            for k, v in inputs.items():
                want = [ids[v[0]], v[1]] if isinstance(v, tuple) else v
                assert node["inputs"].get(k) == want, (name, key, k, node["inputs"].get(k), want)
