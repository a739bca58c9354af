"""Stand-in `server`: a PromptServer whose routes are collected and whose progress texts are kept per node."""
from __future__ import annotations


class _Routes:
    def __init__(self):
        self.handlers: dict[tuple[str, str], object] = {}

    def get(self, path: str):
        def register(handler):
            self.handlers[("GET", path)] = handler
            return handler
        return register


class PromptServer:
    instance: PromptServer | None = None

    def __init__(self):
        self.routes = _Routes()
        self.progress_texts: list[tuple[str, str]] = []

    def send_progress_text(self, text: str, node_id: str, sid=None) -> None:
        self.progress_texts.append((node_id, text))


PromptServer.instance = PromptServer()
