"""A small client for a running ComfyUI server (standard library only): queue graphs, wait, fetch outputs.

Drives the server as a user's front end does: POST /prompt with an API-format graph, poll GET /history/<id>
until the prompt has ended, then GET /view for every image its output nodes saved.
"""
from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import numpy as np

from ..errors import SSAEError


class ComfyError(SSAEError):
    """The server refused a graph, a prompt failed, or the server could not be reached."""


class ComfyClient:
    """One ComfyUI server at `url` (e.g. http://127.0.0.1:8188)."""

    def __init__(self, url: str, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.client_id = str(uuid.uuid4())

    def _request(self, route: str, body: dict | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + route, data, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            raise ComfyError(f"{route} answered {e.code}: {e.read().decode(errors='replace')[:2000]}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            raise ComfyError(f"cannot reach ComfyUI at {self.url} ({e}): start it, or pass the right --url") from None

    def get_json(self, route: str):
        return json.loads(self._request(route))

    def queue(self, graph: dict) -> str:
        """POST an API-format graph; its prompt id. A graph the server refuses raises with the node errors."""
        return json.loads(self._request("/prompt", {"prompt": graph, "client_id": self.client_id}))["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0, poll: float = 0.1) -> dict:
        """The /history entry of a prompt once it has ended; raises ComfyError if it failed or timed out."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            history = self.get_json(f"/history/{prompt_id}")
            if prompt_id in history:
                entry = history[prompt_id]
                status = entry.get("status", {})
                if status.get("status_str") != "success" or not status.get("completed"):
                    errors = [m[1] for m in status.get("messages", []) if m[0] == "execution_error"]
                    detail = errors[0].get("exception_message", "") if errors else json.dumps(status)[:2000]
                    raise ComfyError(f"prompt {prompt_id} failed: {detail.strip()}")
                return entry
            time.sleep(poll)
        raise ComfyError(f"prompt {prompt_id} did not finish in {timeout:.0f}s: is the server busy or stuck?")

    def images(self, entry: dict, node: str | None = None) -> list[np.ndarray]:
        """The images (RGB uint8 [H, W, 3]) a finished prompt saved, from every output node or from `node`."""
        from PIL import Image
        out = []
        for node_id, outputs in entry.get("outputs", {}).items():
            if node is not None and node_id != node:
                continue
            for img in outputs.get("images", []):
                with Image.open(io.BytesIO(self.file(img))) as im:
                    out.append(np.asarray(im.convert("RGB")))
        return out

    def file(self, locator: dict) -> bytes:
        """The bytes of an output file named as in /history ({"filename", "subfolder", "type"}), via GET /view."""
        query = urllib.parse.urlencode({"filename": locator["filename"], "subfolder": locator.get("subfolder", ""),
                                        "type": locator.get("type", "output")})
        return self._request(f"/view?{query}")

    def run(self, graph: dict, timeout: float = 600.0) -> dict:
        """Queue a graph and wait for it: its /history entry."""
        return self.wait(self.queue(graph), timeout)

    def run_all(self, graphs: list[dict], progress: str | None = None, timeout: float = 600.0) -> list[dict]:
        """Queue every graph at once (the server works through them in order), then wait for each: their
        /history entries in order. `progress` names a tqdm bar."""
        ids = [self.queue(g) for g in graphs]
        if progress:
            from tqdm.auto import tqdm
            ids = tqdm(ids, desc=progress, unit="prompt", dynamic_ncols=True)
        return [self.wait(pid, timeout) for pid in ids]

    def wait_until_up(self, timeout: float = 180.0) -> None:
        """Block until the server answers /system_stats."""
        end = time.monotonic() + timeout
        while True:
            try:
                self.get_json("/system_stats")
                return
            except ComfyError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.5)
