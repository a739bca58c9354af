"""The ComfyUI client against a fake server, the sampling graphs, and the probe's scoring (no ComfyUI needed)."""
from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from ssae.world.comfy_client import ComfyClient, ComfyError
from ssae.world.figures import image_grid, markdown_table
from ssae.world.graphs import text_to_image_graph
from ssae.world.probe import Case, heldout_cases, pair_scores, score, seen_cases
from ssae.world.recipe import SamplingDefaults
from ssae.world.render import render
from ssae.world.scene import make_world, random_scene

NAMES = {"clip_name": "world_clip_l.safetensors", "vae_name": "taesd3", "unet_name": "world_mmdit.safetensors"}


class FakeComfy(BaseHTTPRequestHandler):
    """/prompt queues (refusing graphs without a KSampler), /history answers on the second poll, /view serves a PNG."""

    polls: dict[str, int] = {}
    png = b""

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        graph = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["prompt"]
        if not any(n["class_type"] == "KSampler" for n in graph.values()):
            return self._send(400, b'{"error": "no output", "node_errors": {}}')
        pid = "fail" if graph.get("fail") else f"p{len(self.polls)}"
        self.polls[pid] = 0
        self._send(200, json.dumps({"prompt_id": pid}).encode())

    def do_GET(self):
        if self.path.startswith("/history/"):
            pid = self.path.rsplit("/", 1)[1]
            self.polls[pid] += 1
            if self.polls[pid] < 2:
                return self._send(200, b"{}")
            if pid == "fail":
                status = {"status_str": "error", "completed": False,
                          "messages": [["execution_error", {"exception_message": "boom in KSampler"}]]}
                return self._send(200, json.dumps({pid: {"status": status, "outputs": {}}}).encode())
            entry = {"status": {"status_str": "success", "completed": True},
                     "outputs": {"save": {"images": [{"filename": "a.png", "subfolder": "x", "type": "output"}]}}}
            return self._send(200, json.dumps({pid: entry}).encode())
        if self.path.startswith("/view?") and "filename=a.png" in self.path and "subfolder=x" in self.path:
            return self._send(200, self.png, "image/png")
        self._send(404, b"{}")


@pytest.fixture
def server():
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(render(random_scene(("a square", "red", "on white", "top left"), 0))).save(buf, format="PNG")
    FakeComfy.png, FakeComfy.polls = buf.getvalue(), {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeComfy)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_client_queues_waits_and_reads_images(server):
    client = ComfyClient(server)
    graph = text_to_image_graph(NAMES, "a square, red, on white, top left", 3, SamplingDefaults())
    entry = client.run(graph, timeout=10)
    (img,) = client.images(entry, node="save")
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert client.images(entry, node="other") == []


def test_client_errors_name_the_problem(server):
    client = ComfyClient(server)
    with pytest.raises(ComfyError, match="400"):
        client.queue({"a": {"class_type": "SaveImage", "inputs": {}}})
    graph = text_to_image_graph(NAMES, "x", 1, SamplingDefaults()) | {"fail": True}
    with pytest.raises(ComfyError, match="boom in KSampler"):
        client.run(graph, timeout=10)
    with pytest.raises(ComfyError, match="cannot reach ComfyUI"):
        ComfyClient("http://127.0.0.1:9", timeout=2).queue(graph)


def test_graph_uses_comfyuis_own_sd3_path():
    g = text_to_image_graph(NAMES, "a circle, red, on black, top left", 5, SamplingDefaults(steps=7, cfg=3.0),
                            save_latent=True)
    kinds = {n["class_type"] for n in g.values()}
    assert {"UNETLoader", "CLIPLoader", "CLIPTextEncode", "EmptySD3LatentImage", "KSampler", "VAELoader",
            "VAEDecode", "SaveImage", "SaveLatent"} <= kinds
    assert g["clip"]["inputs"]["type"] == "sd3" and g["vae"]["inputs"]["vae_name"] == "taesd3"
    assert g["sample"]["inputs"]["steps"] == 7 and g["sample"]["inputs"]["seed"] == 5
    assert g["negative"]["inputs"]["text"] == "" and g["latent"]["inputs"]["width"] == 64


def test_cases_and_scores():
    world = make_world()
    seen = seen_cases(world, 100, seed=0)
    assert len({c.combo for c in seen}) == 100 and all(c.combo in world.train_combinations for c in seen)
    assert len({c.seed for c in seen}) == 100
    held = heldout_cases(world, 2)
    assert len(held) == 2 * len(world.test_combinations) and {c.combo for c in held} == set(world.test_combinations)
    images = [render(random_scene(c.combo, c.seed)) for c in held]
    s = score(images, held)
    assert s["all"] == 1.0 and s["n"] == len(held) and all(v == 1.0 for v in s["per_category"].values())
    wrong = [Case(("a circle",) + c.combo[1:], c.seed) if c.combo[0] != "a circle" else c for c in held]
    assert score(images, wrong)["per_category"]["shape"] < 0.5
    assert all(v == 1.0 for v in pair_scores(images, held, world.heldout_pairs).values())


def test_grid_and_table():
    imgs = [np.zeros((64, 64, 3), np.uint8)] * 3
    g = image_grid(imgs, 2, [True, False, None], scale=1)
    assert g.shape == (2 * 68, 2 * 68, 3) and tuple(g[0, 0]) == (40, 170, 60) and tuple(g[0, 68]) == (210, 40, 40)
    assert markdown_table(["a", "b"], [[1, 0.5]]) == "| a | b |\n|---|---|\n| 1 | 0.500 |"


def test_run_all_keeps_the_order(server):
    client = ComfyClient(server)
    graphs = [text_to_image_graph(NAMES, f"p{i}", i, SamplingDefaults()) for i in range(3)]
    entries = client.run_all(graphs, timeout=10)
    assert len(entries) == 3 and all(e["status"]["status_str"] == "success" for e in entries)
