"""torchrun with two CPU processes (gloo) trains the same SSAE as one process with as many threads per process:
torchrun runs each worker on one thread, and the suite runs everything on one (tests/conftest.py). A process on
another number of threads rounds its matrix products otherwise, and L-BFGS turns that into another model."""
import os
import socket
import subprocess
import sys

import pytest
import torch

import ssae
from ssae.distributed import CHUNKS, chunked_sum, column_range, rank_columns


def test_column_ranges_cover_every_column_once():
    for n in (1, 7, 10, 1000):
        for world in (1, 2, 3, 8, 11):
            for split in (column_range, rank_columns):
                spans = [split(n, r, world) for r in range(world)]
                assert spans[0][0] == 0 and spans[-1][1] == n
                assert all(a[1] == b[0] and a[0] <= a[1] for a, b in zip(spans, spans[1:]))
            chunk_starts = {column_range(n, c, CHUNKS)[0] for c in range(CHUNKS)} | {n}
            assert all(a in chunk_starts and b in chunk_starts for a, b in
                       (rank_columns(n, r, world) for r in range(world))), "ranks hold whole chunks"


def test_chunked_sum_adds_the_chunks_in_order():
    x = torch.randn(5, 1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    total = chunked_sum(1000, lambda a, b: x[:, a:b].sum(1), (5,))
    expected = torch.zeros(5, dtype=torch.float64)
    for c in range(CHUNKS):
        a, b = column_range(1000, c, CHUNKS)
        expected += x[:, a:b].sum(1)
    assert torch.equal(total, expected)


@pytest.mark.parametrize("options", [["--no-stream"], ["--stream"], ["--preset", "paper-ils", "--epochs", "4"]],
                         ids=["gram", "gram-streamed", "adam"])
def test_torchrun_two_processes_matches_one(tmp_path, options):
    """Each process holds (or, streaming, reads) only its own feature columns; with either solver."""
    vocab = ssae.Vocabulary({"a": ["a0", "a1", "a2"], "b": ["b0", "b1"], "c": ["c0", "c1"]})
    combos = [list(c) for c in vocab.all_combinations()] * 2
    g = torch.Generator().manual_seed(0)
    m = vocab.mask(combos)
    x = m @ torch.randn(vocab.n_concepts, 301, generator=g) + torch.tanh(m @ torch.randn(vocab.n_concepts, 301,
                                                                                             generator=g)) ** 2
    feats = ssae.save_features(tmp_path / "f.safetensors", x + 0.01 * torch.randn(x.shape, generator=g), vocab, combos)
    base = [sys.executable, "-m", "ssae", "train", str(feats), "--epochs", "15", "--device", "cpu", *options]
    subprocess.run(base + ["--out", str(tmp_path / "one.safetensors")], check=True, capture_output=True)
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}  # gloo on loopback: no network is needed or used
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "ssae", "train", *base[4:], "--out", str(tmp_path / "two.safetensors")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = ssae.SSAE.load(tmp_path / "one.safetensors"), ssae.SSAE.load(tmp_path / "two.safetensors")
    for name, t in one.model.state_dict().items():
        if name in ("W", "b"):  # each rank multiplies its own columns: float32 rounding of other block shapes
            assert torch.allclose(t, two.model.state_dict()[name], atol=1e-5, rtol=1e-5), name
        else:  # fitted on the Gram matrix, which chunked_sum makes the same bits in one process and in two
            assert torch.equal(t, two.model.state_dict()[name]), name
    assert one.info["history"] == two.info["history"]
    mix = {"a1": 1.0, "b0": 1.0, "c1": 1.0}
    assert torch.allclose(one.compose(mix), two.compose(mix), atol=1e-4)


def test_workers_launched_without_torchrun_exit_cleanly(tmp_path):
    """Plain env:// variables, no torchrun: rank 0 hosts the rendezvous store itself, and both ranks still
    exit 0 with the model written."""
    vocab = ssae.Vocabulary({"a": ["a0", "a1"], "b": ["b0", "b1"]})
    combos = [list(c) for c in vocab.all_combinations()] * 3
    x = vocab.mask(combos) @ torch.randn(vocab.n_concepts, 40, generator=torch.Generator().manual_seed(1))
    feats = ssae.save_features(tmp_path / "f.safetensors", x, vocab, combos)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-m", "ssae", "train", str(feats), "--epochs", "3", "--device", "cpu",
                               "--out", str(tmp_path / "m.safetensors")],
                              env={**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(r),
                                   "LOCAL_RANK": str(r), "WORLD_SIZE": "2", "GLOO_SOCKET_IFNAME": "lo"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "wrote" in outs[0] and ssae.SSAE.load(tmp_path / "m.safetensors").vocabulary.n_concepts == 4
