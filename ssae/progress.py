"""Training progress for people: one status line per epoch, and a tqdm bar for the CLI and the demo."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .train import Progress


def validation_ev(entry: dict) -> float | None:
    """Explained variance on the validation rows after an epoch: of the members' mean when there are several
    members (what the trained model will be), else of the one model; None without validation rows."""
    val = entry.get("ensemble", entry.get("val"))
    return None if val is None else 1.0 - val


def describe(epoch: int, total: int, entry: dict) -> str:
    """'member 2 · epoch 17 of at most 48 · validation EV 0.9891 · loss 0.00981' for a progress callback's
    arguments (early stopping ends members before their last epoch, so the total is a bound)."""
    parts = []
    if "member" in entry:
        parts.append(f"member {entry['member'] + 1}")
    parts.append(f"epoch {epoch} of at most {total}")
    ev = validation_ev(entry)
    if ev is not None:
        parts.append(f"validation EV {ev:.4f}")
    parts.append(f"loss {entry['loss']:.4g}")
    return " · ".join(parts)


@contextmanager
def tqdm_progress(desc: str) -> Iterator[Progress]:
    """Yields a callback that shows epochs, loss and validation EV live; closes the bar on exit."""
    from tqdm.auto import tqdm
    bar = tqdm(desc=desc, unit="epoch", dynamic_ncols=True)

    def update(epoch: int, total: int, info: dict) -> None:
        bar.total = total
        bar.n = epoch
        post = {"loss": f"{info['loss']:.4f}"}
        if "member" in info:
            post = {"member": info["member"] + 1} | post
        ev = validation_ev(info)
        if ev is not None:
            post["val EV"] = f"{ev:.4f}"
        bar.set_postfix(post, refresh=True)

    try:
        yield update
        if bar.total:  # finished, maybe early (early stopping): the bar ends full, at the epochs run
            bar.total = bar.n
            bar.refresh()
    finally:
        bar.close()
