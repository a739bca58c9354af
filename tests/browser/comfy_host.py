"""A throw-away ComfyUI for the browser test: this project as a custom node, tiny SSAE files in models/ssae.

Run by tests/browser/e2e.test.mjs (or by hand) with the host's interpreter:
    COMFYUI_PATH=/path/to/ComfyUI $COMFYUI_PYTHON tests/browser/comfy_host.py
It prints one JSON line {"url", "base", "files": {...}} once the server answers, then serves until
stdin closes or it gets SIGTERM/SIGINT, and stops ComfyUI and removes its temporary folder.

Environment: COMFYUI_PATH (a ComfyUI checkout, required), COMFYUI_STUBS (extra PYTHONPATH for the host, e.g.
stand-ins for packages it imports but never uses here), SSAE_E2E_PORT (default: a free port).
The interpreter running this script is the one that runs ComfyUI (it needs torch and safetensors).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from comfy_log import import_failure_message  # noqa: E402

GOOD = "tiny_portraits.safetensors"
BROKEN = "broken.safetensors"


def make_ssae(path: Path) -> None:
    """A tiny closed-form SSAE on synthetic 'conditioning' features with the paper's portrait vocabulary."""
    sys.path.insert(0, str(ROOT))
    import torch

    from ssae import PRESETS, Vocabulary, load_features, save_features, train

    vocab = Vocabulary.portraits()
    combos = vocab.sample_combinations(96, seed=0)
    gen = torch.Generator().manual_seed(0)
    shape = {"cond": [4, 64], "pooled_output": [32]}
    n_features = 4 * 64 + 32
    basis = torch.randn(vocab.n_concepts, n_features, generator=gen)
    mask = vocab.mask([list(c) for c in combos])
    features = mask @ basis + 0.05 * torch.randn(len(combos), n_features, generator=gen)
    with tempfile.TemporaryDirectory() as tmp:
        fs = Path(tmp) / "features.safetensors"
        save_features(fs, features, vocab, [list(c) for c in combos], site="conditioning", feature_shape=shape)
        result = train(load_features(fs), PRESETS["additive"])
    result.ssae.save(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    comfy = os.environ.get("COMFYUI_PATH")
    if not comfy or not (Path(comfy) / "main.py").is_file():
        print("COMFYUI_PATH must name a ComfyUI checkout (a folder with main.py)", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="ssae_browser_"))
    proc = None
    try:
        (base / "custom_nodes").mkdir()
        (base / "custom_nodes" / "ComfyUI-SSAE").symlink_to(ROOT, target_is_directory=True)
        models = base / "models" / "ssae"
        models.mkdir(parents=True)
        make_ssae(models / GOOD)
        (models / BROKEN).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
        yaml = base / "extra_model_paths.yaml"
        yaml.write_text(f"ssae_test:\n  base_path: {base}\n  custom_nodes: custom_nodes\n  ssae: models/ssae\n")
        port = int(os.environ.get("SSAE_E2E_PORT") or free_port())
        env = dict(os.environ)
        stubs = os.environ.get("COMFYUI_STUBS")
        if stubs:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [stubs, env.get("PYTHONPATH")]))
        log = base / "comfyui.log"
        proc = subprocess.Popen(
            [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
             "--extra-model-paths-config", str(yaml), "--output-directory", str(base / "output"),
             "--disable-auto-launch"],
            cwd=comfy, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        end = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/object_info/SSAEConceptVector", timeout=10) as r:
                    answer = json.loads(r.read())  # the server answers once every node module was loaded
                failed = import_failure_message(log.read_text(), str(log))
                if failed:
                    print(failed, file=sys.stderr)
                    return 1
                if "SSAEConceptVector" in answer:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if proc.poll() is not None or time.time() > end:
                print(import_failure_message(log.read_text(), str(log)) or
                      f"ComfyUI did not start (or has no SSAE nodes); log tail:\n{log.read_text()[-3000:]}",
                      file=sys.stderr)
                return 1
            time.sleep(0.5)
        print(json.dumps({"url": url, "base": str(base), "log": str(log),
                          "files": {"good": GOOD, "broken": BROKEN}}), flush=True)
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
        while not done.is_set() and proc.poll() is None:
            done.wait(0.5)
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not os.environ.get("SSAE_E2E_KEEP"):
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
