"""Stand-in `aiohttp.web`: a request with a query, and a JSON response."""
from __future__ import annotations

import json


class Request:
    def __init__(self, query: dict | None = None):
        self.query = query or {}


class Response:
    def __init__(self, body: dict, status: int = 200):
        self.status, self.body, self.text = status, body, json.dumps(body)


def json_response(data: dict, status: int = 200) -> Response:
    return Response(data, status)
