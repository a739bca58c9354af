"""Server route for the concept widget: an SSAE file's vocabulary, read from its metadata only."""
from __future__ import annotations

import os

import folder_paths
from aiohttp import web
from server import PromptServer

from ssae.errors import PathError, SSAEError
from ssae.paths import inside
from ssae.safefile import read_header
from ssae.ssae_file import read_metadata


def concepts_of(name: str) -> tuple[int, dict]:
    """(HTTP status, JSON body) for GET /ssae/concepts?name=<file in models/ssae>; no weights are loaded."""
    if not name:
        return 400, {"error": "give ?name=<an SSAE file in models/ssae>"}
    try:
        path = None
        for base in folder_paths.get_folder_paths("ssae"):
            candidate = inside(base, name)
            if os.path.isfile(candidate):
                path = candidate
                break
        if path is None:
            return 404, {"error": f"no SSAE file {name!r} in models/ssae"}
        _, meta = read_header(path)
        vocab, cfg, _, shape, site, info = read_metadata(meta, os.path.basename(path))
    except PathError as e:
        return 400, {"error": str(e)}
    except SSAEError as e:
        return 422, {"error": str(e)}
    return 200, {"name": name, "site": site, "feature_shape": shape, "categories": vocab.categories,
                 "decoder": cfg.decoder, "metrics": info.get("metrics")}


def register_routes() -> None:
    @PromptServer.instance.routes.get("/ssae/concepts")
    async def ssae_concepts(request: web.Request) -> web.Response:
        status, body = concepts_of(request.query.get("name", ""))
        return web.json_response(body, status=status)
