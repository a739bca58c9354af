"""The concept widget in a real ComfyUI front end (headless Chromium), run through `node --test`.

The test itself is tests/browser/e2e.test.mjs; it starts ComfyUI with tests/browser/comfy_host.py.
Needs COMFYUI_PATH (a ComfyUI checkout; COMFYUI_PYTHON: its interpreter, default this one; COMFYUI_STUBS:
extra PYTHONPATH for the host), /usr/bin/chromium (`apt-get install -y chromium`),
node, and node_modules/playwright-core (`npm install` in the repository root). Skipped, with the missing
piece named, when any of them is absent. Writes tests/artifacts/widget.png.
"""
from __future__ import annotations

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
