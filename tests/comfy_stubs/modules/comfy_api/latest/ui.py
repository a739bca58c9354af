"""Stand-in `comfy_api.latest.ui`: the text a node shows."""


class PreviewText:
    def __init__(self, value: str, **kwargs):
        self.value = value

    def as_dict(self) -> dict:
        return {"text": (self.value,)}
