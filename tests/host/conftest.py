"""Host integration tests: a real ComfyUI started on 127.0.0.1 (CPU) with this project as a custom node.

Run when COMFYUI_PATH names a ComfyUI checkout (COMFYUI_PYTHON: its interpreter, default this one;
COMFYUI_STUBS: an extra PYTHONPATH for the host, e.g. stand-ins for packages it imports but no SD3 path uses).
Skipped with that reason otherwise. The models are tiny random ones that the tests build (tiny_models.py), and
fixture_nodes/ adds a test-only node to the host; nothing outside the repository is used. The host also serves
the concept world (`ssae.world`, its default recipe) for the world tests: built once into SSAE_WORLD_CACHE
(default ~/.cache/ssae/world; about 13 minutes on 2 CPU cores) and reused while its recipe is unchanged; a second
server serves the paper world (`paper_comfy`).
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import torch
from comfy_log import import_failure_message
from graphs import CLIP_L, MODELS, TE_MODEL, synthetic_ssae
from tiny_models import random_clip_l, random_mmdit

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_NODES = Path(__file__).resolve().parent / "fixture_nodes"


def _host() -> tuple[Path, str] | None:
    path = os.environ.get("COMFYUI_PATH")
    if not path or not (Path(path) / "main.py").is_file():
        return None
    return Path(path), os.environ.get("COMFYUI_PYTHON", sys.executable)


def pytest_collection_modifyitems(config, items):
    if _host() is None:
        skip = pytest.mark.skip(reason="no ComfyUI host: set COMFYUI_PATH to a ComfyUI checkout "
                                       "(and COMFYUI_PYTHON to its venv's python) to run the host integration tests")
        for item in items:
            if "tests/host" in str(item.fspath).replace(os.sep, "/"):
                item.add_marker(skip)


class Comfy:
    """A running ComfyUI: POST /prompt, wait for /history, read outputs."""

    def __init__(self, url: str, base: Path, proc: subprocess.Popen, log: Path, world=None):
        self.url, self.base, self.proc, self.log = url, base, proc, log
        self.world = world  # the ssae.world.BuiltWorld it serves (default recipe), or None without the world extra

    def get(self, route: str):
        with urllib.request.urlopen(self.url + route, timeout=30) as r:
            return json.loads(r.read())

    def get_status(self, route: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.url + route, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def queue(self, graph: dict) -> str:
        """POST an API-format graph to /prompt without waiting; its prompt id."""
        body = json.dumps({"prompt": graph, "client_id": str(uuid.uuid4())}).encode()
        req = urllib.request.Request(self.url + "/prompt", body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())["prompt_id"]
        except urllib.error.HTTPError as e:
            raise AssertionError(f"/prompt refused the graph: {e.read().decode()}") from None

    def wait(self, pid: str, timeout: float = 300) -> dict:
        """The /history entry of a queued prompt once it has ended, whether it succeeded, failed or was interrupted."""
        end = time.time() + timeout
        while time.time() < end:
            h = self.get(f"/history/{pid}")
            if pid in h:
                return h[pid]
            time.sleep(0.2)
        raise TimeoutError(f"prompt {pid} did not finish in {timeout}s; log: {self.log}")

    @staticmethod
    def succeeded(entry: dict) -> dict:
        """`entry` if its prompt succeeded; raises with the node error (or the whole status) otherwise."""
        status = entry["status"]
        if status.get("status_str") != "success" or not status.get("completed"):
            msgs = [m for m in status.get("messages", []) if m[0] == "execution_error"]
            raise RuntimeError(msgs[0][1]["exception_message"] if msgs else json.dumps(status))
        return entry

    def run(self, graph: dict, timeout: float = 300) -> dict:
        """Queue an API-format graph and wait for it; raises with the node error if it failed."""
        return self.succeeded(self.wait(self.queue(graph), timeout))

    def interrupt(self, pid: str) -> None:
        """POST /interrupt for a running prompt: what the front end's Cancel button sends."""
        body = json.dumps({"prompt_id": pid}).encode()
        req = urllib.request.Request(self.url + "/interrupt", body, {"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).close()

    def feature_folder(self, name: str) -> Path:
        """Where SSAESaveFeatures keeps the feature set `name` (output/ssae_features/<name>)."""
        return self.base / "output" / "ssae_features" / name

    def latent(self, prefix: str) -> torch.Tensor:
        """The newest .latent file SaveLatent wrote under output/<prefix>* (safetensors 'latent_tensor')."""
        from safetensors.torch import load_file
        folder = self.base / "output" / Path(prefix).parent
        files = sorted(folder.glob(Path(prefix).name + "_*.latent"), key=os.path.getmtime)
        assert files, f"no latent written for {prefix}"
        return load_file(str(files[-1]))["latent_tensor"]


def _world(cache_variable: str, default: Path, world: str = "concept", quick: bool = False):
    """A concept world built into (or found in) the folder `cache_variable` names (else `default`); None without the
    `world` extra. The first world's evaluation needs images whose attributes read back, which the quick recipe
    does not give; the paper world's host test checks the loop, which its quick recipe gives in seconds."""
    if not all(importlib.util.find_spec(m) for m in ("diffusers", "transformers", "instant_clip_tokenizer")):
        return None
    from ssae.world.build import build
    from ssae.world.recipe import recipe_for
    return build(Path(os.environ.get(cache_variable, default)), recipe_for(world, quick), progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _host_folder(tmp_path_factory, name: str) -> tuple[Path, str, Path]:
    """The host's checkout and python, and a new folder for one server with this pack in its custom_nodes."""
    host = _host()
    assert host is not None
    base = tmp_path_factory.mktemp(name)
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "ComfyUI-SSAE").symlink_to(ROOT, target_is_directory=True)
    return host[0], host[1], base


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    path, python, base = _host_folder(tmp_path_factory, "comfy")
    for pack in FIXTURE_NODES.iterdir():
        if pack.is_dir() and not pack.name.startswith(("_", ".")):
            (base / "custom_nodes" / pack.name).symlink_to(pack, target_is_directory=True)
    models = base / "models"
    unets = models / "diffusion_models"
    random_mmdit(unets / MODELS[0])  # SD3, context 64 wide: conditioning composed by synthetic SSAEs
    random_mmdit(unets / MODELS[1], x_self_attn=(0,))  # SD3.5 medium's MMDiT-X layout
    random_mmdit(unets / TE_MODEL, ctx=4096, adm=2048)  # takes what CLIP Text Encode gives for SD3
    random_clip_l(models / "text_encoders" / CLIP_L)
    (models / "ssae").mkdir()
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(f"ssae_test:\n  base_path: {base}\n  custom_nodes: custom_nodes\n"
                    "  diffusion_models: models/diffusion_models\n  text_encoders: models/text_encoders\n"
                    "  ssae: models/ssae\n")
    world = _world("SSAE_WORLD_CACHE", Path.home() / ".cache" / "ssae" / "world")
    if world is not None:
        with open(yaml, "a") as f:
            f.write((world.root / "extra_model_paths.yaml").read_text())
    c = _start(path, python, base, yaml, world)
    yield c
    _stop(c)


@pytest.fixture(scope="session")
def paper_comfy(tmp_path_factory):
    """A second server for the paper world (both worlds' autoencoders are ComfyUI's `taesd3`, so one server serves
    one world): its quick build in SSAE_PAPER_WORLD_CACHE (default ~/.cache/ssae/world-paper-quick), or a full
    build there when SSAE_PAPER_WORLD_FULL=1."""
    path, python, base = _host_folder(tmp_path_factory, "comfy_paper")
    full = os.environ.get("SSAE_PAPER_WORLD_FULL") == "1"
    world = _world("SSAE_PAPER_WORLD_CACHE", Path.home() / ".cache" / "ssae" / ("world-paper" if full else
                                                                               "world-paper-quick"), "paper", not full)
    if world is None:
        pytest.skip("the world tests need the `world` extra (diffusers, transformers, instant-clip-tokenizer)")
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(f"ssae_test:\n  base_path: {base}\n  custom_nodes: custom_nodes\n  ssae: models/ssae\n"
                    + (world.root / "extra_model_paths.yaml").read_text())
    c = _start(path, python, base, yaml, world)
    yield c
    _stop(c)


def _start(path: Path, python: str, base: Path, yaml: Path, world) -> Comfy:
    """ComfyUI (`path`, run by `python`) serving `base` with the model paths of `yaml`, once it answers."""
    port = _free_port()
    env = dict(os.environ)
    if os.environ.get("COMFYUI_STUBS"):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ["COMFYUI_STUBS"], env.get("PYTHONPATH")]))
    log = base / "comfyui.log"
    proc = subprocess.Popen([python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                             "--extra-model-paths-config", str(yaml), "--output-directory", str(base / "output"),
                             "--disable-auto-launch"],
                            cwd=path, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    c = Comfy(f"http://127.0.0.1:{port}", base, proc, log, world)
    end = time.time() + 180
    while True:
        try:
            c.get("/system_stats")
            break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.time() > end:
                proc.kill()
                raise RuntimeError(import_failure_message(log.read_text(), str(log)) or
                                   f"ComfyUI did not start: {log.read_text()[-3000:]}")
            time.sleep(0.5)
    failed = import_failure_message(log.read_text(), str(log))  # the nodes are loaded once the server answers
    if failed:
        proc.terminate()
        raise RuntimeError(failed)
    return c


def _stop(c: Comfy) -> None:
    c.proc.terminate()
    try:
        c.proc.wait(20)
    except subprocess.TimeoutExpired:
        c.proc.kill()


@pytest.fixture(scope="session")
def ssae_files(comfy: Comfy) -> Path:
    """Synthetic SSAE files in the host's models/ssae: the conditioning, and joint block 0's img and txt streams."""
    folder = comfy.base / "models" / "ssae"
    synthetic_ssae(folder / "cond.safetensors", "conditioning", {"cond": [8, 64], "pooled_output": [32]})
    synthetic_ssae(folder / "block_img.safetensors", "joint_blocks.0.img", [128])
    synthetic_ssae(folder / "block_txt.safetensors", "joint_blocks.0.txt", [8, 128])
    return folder
