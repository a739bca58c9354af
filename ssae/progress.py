"""A tqdm bar as a training progress callback, for the CLI and the demo."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .train import Progress


@contextmanager
def tqdm_progress(desc: str) -> Iterator[Progress]:
    """Yields a callback that shows epochs, loss and validation loss live; closes the bar on exit."""
    from tqdm.auto import tqdm
    bar = tqdm(desc=desc, unit="epoch", dynamic_ncols=True)

    def update(epoch: int, total: int, info: dict) -> None:
        bar.total = total
        bar.n = epoch
        post = {"loss": f"{info['loss']:.4f}"} | ({"val": f"{info['val']:.4f}"} if info.get("val") is not None else {})
        bar.set_postfix(post, refresh=True)

    try:
        yield update
    finally:
        bar.close()
