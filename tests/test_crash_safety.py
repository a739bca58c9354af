"""Crash safety: SIGKILL in the middle of appends and of training, and failures in the middle of a write.

A killed writer must leave every file that a reader trusts whole: the manifest lists only complete
shards, each holding exactly what was written; a checkpoint resumes to the model an uninterrupted run
gives; a failed save leaves the previous file and no temporary file behind.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from builders import make_features
from safetensors.torch import save_file as real_save_file

import ssae
import ssae.safefile
import ssae.store
from ssae.presets import PRESETS
from ssae.safefile import read_header

CHECKPOINT = sys.modules["ssae.checkpoint"]

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

ROOT = Path(__file__).resolve().parent.parent
ENV = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
F = 2048
VOCAB = ssae.Vocabulary({"c": ["x", "y"]})


def start(script: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def wait_for(proc: subprocess.Popen, word: str, deadline: float = 60) -> list[str]:
    """Lines of the child's output up to and including the first that is `word` or starts with `word` + space."""
    lines, t0 = [], time.monotonic()
    while time.monotonic() - t0 < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"the child ended before {word!r}: {proc.wait()} {proc.stderr.read()[-2000:]}")
        lines.append(line.strip())
        if lines[-1] == word or lines[-1].startswith(word + " "):
            return lines
    raise AssertionError(f"no {word!r} within {deadline} s")


def kill(proc: subprocess.Popen) -> list[str]:
    """SIGKILL the child; the lines it printed before dying."""
    os.kill(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, \
        f"the child was not killed mid-run (exit {proc.returncode}): {err[-3000:]}"
    return out.splitlines()


# -- SIGKILL during append ------------------------------------------------------------------------

SAY = r"""
import sys

def say(line):  # one write per line: under PYTHONUNBUFFERED, print's pieces are separate writes and a kill
    sys.stdout.write(line + "\n")  # between them leaves half a line
    sys.stdout.flush()
"""
"""The children's output: whole lines, which the test parses."""

APPENDER = SAY + r"""
import json, sys, time
from pathlib import Path
import torch, ssae, ssae.safefile, ssae.store
folder, F, pause = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
vocab = ssae.Vocabulary({"c": ["x", "y"]})
done = 0

def stop_here():  # from the fourth append on, wait here to be killed
    if done >= 3:
        say("paused")
        time.sleep(120)

def stopping(real, after: bool):
    def wrapper(*args, **kwargs):
        if not after:
            stop_here()
        out = real(*args, **kwargs)
        if after:
            stop_here()
        return out
    return wrapper

if pause == "temp-shard":  # the new shard is fully written under its temporary name, not yet renamed
    ssae.safefile.save_file = stopping(ssae.safefile.save_file, after=True)
elif pause == "before-manifest":  # the shard is in place, the manifest not yet rewritten
    ssae.store.atomic_write_text = stopping(ssae.store.atomic_write_text, after=False)
say("ready")
while True:
    manifest = folder / "manifest.json"
    k = len(json.loads(manifest.read_text())["shards"]) if manifest.exists() else 0
    while (folder / f"shard-{k:05d}.safetensors").exists():  # as append_features picks its name
        k += 1
    n = 1 + k % 4
    ssae.append_features(folder, torch.full((n, F), float(k)), vocab, [["x"] if i % 2 else ["y"] for i in range(n)],
                         prompts=[f"shard {k} row {i}" for i in range(n)], site="crash.test")
    say(f"appended {k}")
    done += 1
"""


def shard_index(path: Path) -> int:
    return int(path.name[len("shard-"):-len(".safetensors")])


def expected_rows(k: int) -> torch.Tensor:
    return torch.full((1 + k % 4, F), float(k))


def check_folder(folder: Path) -> tuple[list[int], set[int], list[Path]]:
    """The set loads and holds exactly the listed shards' rows; every shard file on disk, listed or not, is whole.
    Returns the listed shard numbers, the unlisted ones (written before a kill lost their manifest entry) and
    the leftover temporary files."""
    fs = ssae.load_features(folder)
    listed = [shard_index(p) for p in fs.shards]
    assert listed == sorted(set(listed)), "shards are listed once each, in the order they were written"
    assert fs.counts == [1 + k % 4 for k in listed]
    assert torch.equal(fs.load(), torch.cat([expected_rows(k) for k in listed]))
    assert fs.prompts == [f"shard {k} row {i}" for k in listed for i in range(1 + k % 4)]
    assert fs.labels == [["x"] if i % 2 else ["y"] for k in listed for i in range(1 + k % 4)]
    on_disk = {shard_index(p): p for p in folder.glob("shard-*.safetensors")}
    for k, p in on_disk.items():  # renamed into place whole or not at all
        assert torch.equal(ssae.load_features(p).load(), expected_rows(k)), p.name
    temps = [p for p in folder.iterdir() if p.name.startswith(".")]  # ours (.<name>.<random>.tmp) or
    # safetensors' own (.tmpXXXXXX): hidden, so loaders and appends never take them for shards
    visible = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    assert visible == {"manifest.json"} | {p.name for p in on_disk.values()}, visible
    return listed, set(on_disk) - set(listed), temps


def test_sigkill_during_append_leaves_every_listed_shard_whole(tmp_path):
    folder = tmp_path / "set"
    rng = random.Random(1234)
    # five kills at random moments (different delays, with jitter), two at the worst moments of an append
    rounds = [("none", 0.0), ("none", 0.004), ("temp-shard", None), ("none", 0.02), ("before-manifest", None),
              ("none", 0.07), ("none", 0.2)]
    appended_before: list[int] = []
    for pause, delay in rounds:
        proc = start(APPENDER, folder, F, pause)
        seen = wait_for(proc, "appended")  # at least one append finished: the folder has a manifest
        if delay is None:
            seen += wait_for(proc, "paused")
        else:
            time.sleep(delay + rng.uniform(0, 0.01))
        lines = seen + kill(proc)
        reported = [int(line.split()[1]) for line in lines if line.startswith("appended")]
        try:
            listed, unlisted, temps = check_folder(folder)
        except Exception as e:  # name the round and what the kill left behind
            raise AssertionError(f"after the kill of round {pause, delay} (printed {lines[-5:]}), the folder holds "
                                 f"{sorted(p.name for p in folder.iterdir())}: {e}") from e
        assert set(reported) | set(appended_before) <= set(listed), "an append that returned is durable"
        assert set(listed) >= set(appended_before), "a later append never drops an earlier shard"
        if pause == "temp-shard":
            assert any(p.name.startswith(".shard-") for p in temps), "the kill left the shard's temporary file"
        if pause == "before-manifest":
            assert max(unlisted) > max(listed), "the kill left a whole shard that the manifest does not list"
        appended_before = listed

    # debris a kill can leave (a half-written shard or manifest under its temporary name) changes nothing
    (folder / ".shard-99999.safetensors.abc123.tmp").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"feat")
    (folder / ".manifest.json.def456.tmp").write_text('{"format": "ssae-features/1", "shards": [{"fi')
    listed, unlisted, temps = check_folder(folder)
    assert len(temps) >= 2
    new = ssae.append_features(folder, expected_rows(10_000)[:1], VOCAB, [["y"]], prompts=["shard 10000 row 0"],
                               site="crash.test")
    assert shard_index(new) not in set(listed) | unlisted, "a further append never overwrites a shard file"
    fs = ssae.load_features(folder)
    assert [shard_index(p) for p in fs.shards] == listed + [shard_index(new)]
    assert torch.equal(fs.load()[-1], torch.full((F,), 10_000.0))


# -- SIGKILL during training with a checkpoint ----------------------------------------------------

EPOCHS = 40
"""Two members of 20 epochs each, no early stopping: kills land inside either member and between them."""
TRAINER = SAY + r"""
import sys, time
from dataclasses import replace
import ssae
from ssae.presets import PRESETS
feats, ckpt, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
recipe = replace(PRESETS["default"], train=replace(PRESETS["default"].train, epochs=epochs // 2, members=2, patience=0,
                                                   checkpoint_every=1))
def progress(epoch, total, info):  # called after the epoch's checkpoint is written; the pause leaves time to kill
    say(f"epoch {epoch}")
    time.sleep(0.03)
say("ready")
ssae.train(ssae.load_features(feats), recipe, progress=progress, checkpoint=ckpt)
say("done")
"""


def recipe(epochs: int = EPOCHS):
    return replace(PRESETS["default"], train=replace(PRESETS["default"].train, epochs=epochs // 2, members=2,
                                                     patience=0, checkpoint_every=1))


def checkpoint_state(ckpt: Path) -> tuple[int, list[dict]]:
    _, meta = read_header(ckpt)
    return int(meta["epoch"]), json.loads(meta["history"])


def assert_same_model(a: ssae.SSAE, b: ssae.SSAE) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k], sb[k], atol=1e-6), f"{k} differs by {(sa[k] - sb[k]).abs().max()}"


def assert_same_history(a: list[dict], b: list[dict]) -> None:
    assert [h["epoch"] for h in a] == [h["epoch"] for h in b]
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6) and x["lr"] == pytest.approx(y["lr"])
        assert (x["val"] is None) == (y["val"] is None) and (x["val"] is None or x["val"] == pytest.approx(y["val"],
                                                                                                         abs=1e-6))


def test_sigkill_during_training_resumes_to_the_uninterrupted_model(tmp_path):
    feats = make_features(tmp_path / "f.safetensors", n_features=24)
    data = ssae.load_features(feats)
    reference = ssae.train(data, recipe())
    ckpt = tmp_path / "run.ckpt.safetensors"
    rng = random.Random(7)
    done_before = 0
    for kill_after in (rng.randint(3, 12), rng.randint(18, 28)):  # killed twice: the second run resumed the first
        proc = start(TRAINER, feats, ckpt, EPOCHS)
        seen = wait_for(proc, f"epoch {kill_after}", deadline=120)
        time.sleep(rng.uniform(0, 0.03))
        lines = seen + kill(proc)
        printed = [int(line.split()[1]) for line in lines if line.startswith("epoch")]
        epoch, history = checkpoint_state(ckpt)
        assert max(printed) <= epoch < EPOCHS, (printed, epoch)
        assert min(printed) == done_before + 1, "the second run resumed where the first one's checkpoint left off"
        assert [h["epoch"] for h in history] == list(range(epoch)), "the loss history covers every epoch done"
        assert_same_history(history, reference.history[:epoch])
        done_before = epoch
    resumed = ssae.train(data, recipe(), checkpoint=ckpt)
    assert_same_history(resumed.history, reference.history)
    assert resumed.best_epoch == reference.best_epoch
    assert_same_model(resumed.ssae, reference.ssae)
    assert checkpoint_state(ckpt)[0] == EPOCHS


def test_a_failed_checkpoint_write_mid_run_still_resumes_to_the_same_model(tmp_path, monkeypatch):
    data = ssae.load_features(make_features(tmp_path / "f.safetensors", n_features=24))
    r = recipe(12)
    reference = ssae.train(data, r)
    ckpt = tmp_path / "run.ckpt.safetensors"
    calls = {"n": 0}
    real = CHECKPOINT.atomic_save

    def flaky(tensors, metadata, path):
        calls["n"] += 1
        if calls["n"] == 6:  # the sixth checkpoint write fails (then the interrupt handler's own write works)
            raise OSError(28, "No space left on device")
        return real(tensors, metadata, path)

    monkeypatch.setattr(CHECKPOINT, "atomic_save", flaky)
    with pytest.raises(OSError, match="No space"):
        ssae.train(data, r, checkpoint=ckpt)
    epoch, history = checkpoint_state(ckpt)
    assert epoch == 6 and [h["epoch"] for h in history] == list(range(6))
    monkeypatch.setattr(CHECKPOINT, "atomic_save", real)
    resumed = ssae.train(data, r, checkpoint=ckpt)
    assert_same_history(resumed.history, reference.history)
    assert_same_model(resumed.ssae, reference.ssae)


# -- a failure in the middle of a write -----------------------------------------------------------

def half_written(tensors, filename, metadata=None):
    """save_file that dies after writing half of the file."""
    real_save_file(tensors, filename, metadata=metadata)
    data = Path(filename).read_bytes()
    Path(filename).write_bytes(data[: len(data) // 2])
    raise OSError(28, "No space left on device")


def interrupted(tensors, filename, metadata=None):
    with open(filename, "wb") as f:
        f.write(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"__meta")
    raise KeyboardInterrupt


def failing_fsync(fd):
    raise OSError(5, "Input/output error")


def failing_replace(src, dst):
    raise OSError(18, "Invalid cross-device link")


FAILURES = {"half-written": ("save_file", half_written, OSError), "interrupted": ("save_file", interrupted,
                                                                                  KeyboardInterrupt),
            "fsync": ("fsync", failing_fsync, OSError), "rename": ("replace", failing_replace, OSError)}


def inject(monkeypatch, failure: str):
    where, fn, error = FAILURES[failure]
    if where == "save_file":
        monkeypatch.setattr(ssae.safefile, "save_file", fn)
    else:
        monkeypatch.setattr(os, where, fn)  # restored by monkeypatch before anything else runs
    return error


@pytest.mark.parametrize("failure", sorted(FAILURES))
@pytest.mark.parametrize("what", ["model", "features", "raw"])
def test_a_failed_save_keeps_the_previous_file_and_leaves_no_temp_file(tmp_path, monkeypatch, failure, what):
    path = tmp_path / "out.safetensors"
    if what == "model":
        data = ssae.load_features(make_features(tmp_path / "src" / "f.safetensors", n_features=8))
        s = ssae.train(data, PRESETS["additive"]).ssae

        def save():
            s.save(path)

        def load():
            ssae.SSAE.load(path).compose(["blond"])
    elif what == "features":
        def save():
            ssae.save_features(path, torch.ones(2, 3), VOCAB, [["x"], ["y"]])

        def load():
            ssae.load_features(path).load()
    else:
        def save():
            ssae.safefile.atomic_save({"t": torch.arange(5.0)}, {"m": "new"}, path)

        def load():
            read_header(path)
    save()
    load()
    before = path.read_bytes()
    error = inject(monkeypatch, failure)
    with pytest.raises(error):
        save()
    monkeypatch.undo()
    assert path.read_bytes() == before, "the previous file is untouched"
    load()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["out.safetensors"], "no temporary file"


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_a_failed_append_changes_nothing_and_the_next_append_works(tmp_path, monkeypatch, failure):
    folder = tmp_path / "set"
    for k in range(2):
        ssae.append_features(folder, expected_rows(k), VOCAB, [["x"]] * (1 + k), site="crash.test")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    error = inject(monkeypatch, failure)
    with pytest.raises(error):
        ssae.append_features(folder, expected_rows(2), VOCAB, [["x"]] * 3, site="crash.test")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before, "no shard, no manifest change, no temp file"
    ssae.append_features(folder, expected_rows(2), VOCAB, [["x"]] * 3, site="crash.test")
    assert torch.equal(ssae.load_features(folder).load(), torch.cat([expected_rows(k) for k in range(3)]))


def test_a_failed_manifest_write_leaves_the_old_manifest_and_an_unlisted_shard(tmp_path, monkeypatch):
    """The shard is written, then the manifest write fails: readers see the old set; the next append skips
    the unlisted shard's name instead of overwriting it."""
    folder = tmp_path / "set"
    ssae.append_features(folder, expected_rows(0), VOCAB, [["x"]], site="crash.test")
    manifest = (folder / "manifest.json").read_text()

    def no_manifest(text, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ssae.store, "atomic_write_text", no_manifest)
    with pytest.raises(OSError):
        ssae.append_features(folder, expected_rows(1), VOCAB, [["x"]] * 2, site="crash.test")
    monkeypatch.undo()
    assert (folder / "manifest.json").read_text() == manifest
    assert (folder / "shard-00001.safetensors").exists()
    assert torch.equal(ssae.load_features(folder).load(), expected_rows(0))
    new = ssae.append_features(folder, expected_rows(2), VOCAB, [["x"]] * 3, site="crash.test")
    assert new.name == "shard-00002.safetensors"
    fs = ssae.load_features(folder)
    assert [p.name for p in fs.shards] == ["shard-00000.safetensors", "shard-00002.safetensors"]
    assert torch.equal(fs.load(), torch.cat([expected_rows(0), expected_rows(2)]))


def test_atomic_writes_get_the_mode_a_plain_open_gives(tmp_path):
    """Temporary files are private (0600); the file that replaces the target must be readable as any file the
    user writes, or a ComfyUI running as another user cannot load the models and features."""
    old = os.umask(0o022)
    try:
        ssae.safefile.atomic_write_text("{}", tmp_path / "a.json")
        ssae.safefile.atomic_save({"x": torch.zeros(1)}, {}, tmp_path / "a.safetensors")
    finally:
        os.umask(old)
    for name in ("a.json", "a.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
