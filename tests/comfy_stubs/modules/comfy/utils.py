"""Stand-in `comfy.utils`: the progress bar a node reports through; every bar made is kept for the tests."""
from __future__ import annotations

BARS: list[ProgressBar] = []


class ProgressBar:
    def __init__(self, total, node_id=None):
        self.total, self.current, self.node_id, self.updates = total, 0, node_id, []
        BARS.append(self)

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        self.updates.append((self.current, self.total))

    def update(self, value):
        self.update_absolute(self.current + value)
