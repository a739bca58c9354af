"""Stand-in `comfy_api.latest`: `io`, `ui` and `ComfyExtension`."""
from . import io, ui


class ComfyExtension:
    async def on_load(self) -> None:
        pass

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return []


__all__ = ["ComfyExtension", "io", "ui"]
