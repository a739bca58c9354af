"""Issue #6, "Load": a queue of prompts on one ComfyUI gives what a sequential run gives, block patches never leak
from one queued prompt into the next, memory stays flat over the queue, and training inside the graph obeys the
Cancel button (POST /interrupt), keeps its loss history and resumes when queued again."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from graphs import COMBOS, MODELS, VOCAB, capture_graph, compose_graph

import ssae
from ssae.safefile import read_header

if TYPE_CHECKING:
    from conftest import Comfy

MODEL = MODELS[0]
WARMUP, QUEUE, CAPTURE_STEPS = 5, 50, 2
RSS_GROWTH_MIB = 64  # 1-4 MiB measured here; a leak of 4 MiB a prompt shows as about 200 MiB
MIX = {"blond": 1.0, "hat": 1.0}
SWAP = {"add": {"brunette": 1}, "remove": {"blond": 1}}
SITES = {"A": "joint_blocks.0.img", "B": "joint_blocks.1.img", "C": None}  # C: the unpatched model
ORDER = "ABABCACBC"  # every transition between patched, other-patched and unpatched prompts
TRAIN_ROWS, TRAIN_EPOCHS = 512, 1000  # paper-ils: 3-7 ms an epoch here, a checkpoint every 25


def sample(i: int) -> tuple[list[str], int, str]:
    """Labels, seed and split of the i-th queued capture: every seed differs, so every captured row does."""
    return COMBOS[(i // 2) % len(COMBOS)], 1000 + i, "test" if i % 5 == 4 else "train"


def rss_mib(pid: int) -> float:
    """Resident set size of process `pid` in MiB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def messages(entry: dict) -> dict[str, dict]:
    """A /history entry's status messages by event name (execution_cached, execution_interrupted, ...)."""
    return {event: data for event, data in entry["status"]["messages"]}


def patched_graph(model: str, prefix: str, site: str | None) -> dict:
    """The MIX composition sampled with block_img's SWAP edit patched at `site` (None: unpatched)."""
    patch = None if site is None else {"file": "block_img.safetensors", "site": site, "concepts": SWAP, "strength": 3.0}
    return compose_graph(model, prefix, MIX, patch=patch)


@pytest.fixture(scope="module")
def queued_capture(comfy: Comfy, ssae_files: Path) -> tuple[float | None, float | None]:
    """Warm up with a few captures, then POST QUEUE capture prompts at once into the feature set 'queued' and wait
    for them all; the server's RSS in MiB after the warm-up and after the queue (None without /proc)."""
    for i in range(WARMUP):
        comfy.run(capture_graph(MODEL, "warmup", *sample(i), steps=CAPTURE_STEPS))
    proc = Path(f"/proc/{comfy.proc.pid}/status").exists()
    before = rss_mib(comfy.proc.pid) if proc else None
    pids = [comfy.queue(capture_graph(MODEL, "queued", *sample(i), steps=CAPTURE_STEPS)) for i in range(QUEUE)]
    for pid in pids:
        comfy.succeeded(comfy.wait(pid))
    return before, rss_mib(comfy.proc.pid) if proc else None


def test_queued_captures_equal_a_sequential_run(comfy: Comfy, queued_capture: tuple):
    for i in range(QUEUE):
        comfy.run(capture_graph(MODEL, "sequential", *sample(i), steps=CAPTURE_STEPS))
    queued, sequential = (ssae.load_features(comfy.feature_folder(n)) for n in ("queued", "sequential"))
    assert len(queued) == len(sequential) == QUEUE
    rows = queued.load()
    assert torch.unique(rows, dim=0).shape[0] == QUEUE, "every sample differs, so the row order is checked too"
    assert torch.equal(rows, sequential.load()), "the queue captured other rows, or in another order"
    assert queued.labels == sequential.labels == [[VOCAB.resolve(c) for c in sample(i)[0]] for i in range(QUEUE)]
    assert queued.prompts == sequential.prompts and queued.split == sequential.split


def test_memory_stays_flat_over_the_queue(queued_capture: tuple[float | None, float | None]):
    before, after = queued_capture
    if before is None:
        pytest.skip("no /proc/<pid>/status on this system: the server's RSS cannot be read")
    print(f"ComfyUI RSS after {WARMUP} warm-up prompts: {before:.1f} MiB; after {QUEUE} more: {after:.1f} MiB")
    assert after - before < RSS_GROWTH_MIB, f"RSS grew {after - before:.1f} MiB over {QUEUE} queued prompts"


@pytest.mark.parametrize("model", MODELS)
def test_interleaved_block_patches_equal_each_run_alone_and_never_leak(comfy: Comfy, ssae_files: Path, model: str):
    """A patches joint block 0, B joint block 1 of the same loaded model, C samples it unpatched; queued together
    in ORDER, each equals its run alone: no patch stays on the shared model or reaches the next prompt."""
    tag = model.split(".")[0]
    alone = {}
    for name, site in SITES.items():
        comfy.run(patched_graph(model, f"mix/{tag}_alone_{name}", site))
        alone[name] = comfy.latent(f"mix/{tag}_alone_{name}")
    assert not torch.equal(alone["A"], alone["C"]) and not torch.equal(alone["B"], alone["C"]), \
        "each patch changes the sample, and none stays on the loaded model for the next prompt"
    assert not torch.equal(alone["A"], alone["B"]), "the two blocks' patches must be told apart"
    pids = [comfy.queue(patched_graph(model, f"mix/{tag}_q{i}_{name}", SITES[name])) for i, name in enumerate(ORDER)]
    for i, (name, pid) in enumerate(zip(ORDER, pids)):
        entry = comfy.succeeded(comfy.wait(pid))
        assert "sample" not in messages(entry)["execution_cached"]["nodes"], "the sampler must run, not be cached"
        after = f" right after {ORDER[i - 1]}" if i else ""
        assert torch.equal(comfy.latent(f"mix/{tag}_q{i}_{name}"), alone[name]), f"queued {name} (#{i}){after}"


def write_training_set(folder: Path) -> None:
    """TRAIN_ROWS additive samples of joint block 0's img stream, written where SSAETrain looks for feature sets."""
    g = torch.Generator().manual_seed(0)
    combos = [COMBOS[i % len(COMBOS)] for i in range(TRAIN_ROWS)]
    vectors = torch.randn(VOCAB.n_concepts, 128, generator=g)
    x = VOCAB.mask(combos) @ vectors + 0.1 * torch.randn(TRAIN_ROWS, 128, generator=g)
    ssae.append_features(folder, x, VOCAB, combos, site="joint_blocks.0.img", feature_shape=[128])


def cancel_once_checkpointed(comfy: Comfy, pid: str, folder: Path, pattern: str,
                             timeout: float = 120) -> tuple[dict, Path]:
    """Press Cancel (POST /interrupt) as soon as the running prompt's first periodic checkpoint (a file of `folder`
    matching `pattern`) exists, so training is under way; the prompt's /history entry once it has ended, and the
    checkpoint."""
    end = time.time() + timeout
    while not (found := sorted(folder.glob(pattern))):
        assert pid not in comfy.get(f"/history/{pid}"), "training ended before its first checkpoint: raise TRAIN_EPOCHS"
        assert time.time() < end, f"no checkpoint written in {timeout} s"
        time.sleep(0.05)
    comfy.interrupt(pid)
    return comfy.wait(pid), found[0]


def test_cancel_keeps_history_and_requeue_resumes(comfy: Comfy):
    name, preset, epochs = "cancel_me", "paper-ils", TRAIN_EPOCHS
    write_training_set(comfy.feature_folder(name))
    graph = {"train": {"class_type": "SSAETrain", "inputs": {"features": name, "preset": preset, "epochs": epochs,
                                                             "seed": 0, "device": "cpu"}},
             "save": {"class_type": "SSAESave", "inputs": {"ssae": ["train", 0], "filename": "cancelled_then_resumed"}}}
    saved = comfy.base / "models" / "ssae" / "cancelled_then_resumed.safetensors"

    # named by the run's fingerprint: the same set and settings find it again
    entry, checkpoint = cancel_once_checkpointed(comfy, comfy.queue(graph), comfy.feature_folder(name),
                                                 f".checkpoint-{preset}-*.safetensors")
    assert entry["status"]["status_str"] == "error" and "execution_interrupted" in messages(entry)
    assert "execution_success" not in messages(entry) and not saved.exists()
    _, meta = read_header(checkpoint)
    stopped, history = int(meta["epoch"]), json.loads(meta["history"])
    print(f"cancelled at epoch {stopped} of {epochs}")
    assert 0 < stopped < epochs and [h["epoch"] for h in history] == list(range(stopped)), "cancel keeps the history"

    comfy.run(graph)
    resumed = re.findall(rf"resuming from \S*{re.escape(checkpoint.name)} at epoch (\d+)", comfy.log.read_text())
    assert resumed == [str(stopped)], "the re-queued run starts where the cancelled one stopped, not from scratch"
    final = ssae.SSAE.load(saved).info["history"]
    assert [h["epoch"] for h in final] == list(range(epochs)), "the resumed model's history has every epoch"
    assert final[:stopped] == history, "the epochs before the cancel are the ones the cancelled run recorded"


def test_default_preset_shows_validation_ev_and_stops_by_itself(comfy: Comfy):
    """SSAETrain with the preset's own epochs (0): the node's text reports the validation EV, and early stopping
    ends the members before their epoch budget on data that one epoch fits."""
    name = "stops_by_itself"
    write_training_set(comfy.feature_folder(name))
    entry = comfy.run({"train": {"class_type": "SSAETrain", "inputs": {"features": name, "preset": "default",
                                                                       "epochs": 0, "seed": 0, "device": "cpu"}},
                       "save": {"class_type": "SSAESave", "inputs": {"ssae": ["train", 0], "filename": "stopped"}}})
    text = " ".join(entry["outputs"]["train"]["text"])
    ev = float(re.search(r"validation EV (\S+)", text).group(1).rstrip(","))
    assert 0.9 < ev <= 1.0, text
    history = ssae.SSAE.load(comfy.base / "models" / "ssae" / "stopped.safetensors").info["history"]
    cfg = ssae.PRESETS["default"].train
    assert len(history) < cfg.members * cfg.epochs and {h["member"] for h in history} == set(range(cfg.members))
