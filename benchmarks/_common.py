"""Shared helpers for the benchmark scripts: workers in subprocesses, peak memory, data sets, output.

Every measured method runs in its own subprocess (`python SCRIPT --worker JSON`), so its peak resident
memory (VmHWM) is its own; the parent runs the methods one after another in a single invocation,
so they see the same machine load, and the tables report ratios between them.
"""
from __future__ import annotations

import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SD35_SHAPE = {"context": [333, 4096], "pooled": [2048]}
"""SD3.5 conditioning: 333 context tokens (77 CLIP + 256 T5) x 4096, plus the 2048-d pooled vector."""
SD35_F = 333 * 4096 + 2048  # 1,366,016


# -- process plumbing ---------------------------------------------------------------------------

def _status_mb(pid: int | str, *fields: str) -> dict[str, float]:
    """Memory fields of /proc/<pid>/status (pid may be "self"), MiB; 0 where missing or unreadable."""
    got = dict.fromkeys(fields, 0.0)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in got:
                got[key] = int(rest.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return got


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB: VmHWM, the high-water mark of its own address
    space. Not ru_maxrss, which Linux carries over from the parent through fork and exec, so that every
    worker would report at least the orchestrating process's memory (it is the fallback without /proc)."""
    return _status_mb("self", "VmHWM")["VmHWM"] or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(script: str | Path, spec: dict, timeout: float | None = None, rss_limit_mb: float | None = None) -> dict:
    """Run `script --worker SPEC` in a fresh interpreter; returns the JSON object it prints last.
    The worker is killed when its resident memory passes rss_limit_mb (a watchdog polling /proc), or
    after timeout seconds; a worker that fails returns {"error": ...} instead of raising."""
    cmd = [sys.executable, str(script), "--worker", json.dumps(spec)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        watched, anon, killed = 0.0, 0.0, None
        while p.poll() is None:
            time.sleep(0.2)
            # RssAnon leaves out file pages, such as memory-mapped shards, which count in VmRSS while
            # cached but which the kernel can drop
            now = _status_mb(p.pid, "VmRSS", "RssAnon")
            watched, anon = max(watched, now["VmRSS"]), max(anon, now["RssAnon"])
            if rss_limit_mb and watched > rss_limit_mb:
                killed = f"killed: resident memory passed the {rss_limit_mb:.0f} MiB limit"
            elif timeout and time.perf_counter() - t > timeout:
                killed = f"killed: ran past the {timeout:.0f}s limit"
            if killed:
                p.kill()
                p.wait()
        wall = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if killed:
        return {"error": killed, "watched_rss_mb": watched, "process_wall_s": wall, "spec": spec}
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            res = json.loads(line)
            res |= {"process_wall_s": wall, "watched_rss_mb": watched, "watched_anon_mb": anon}
            return res
    return {"error": f"worker exited with {p.returncode}: {stderr.strip()[-2000:]}", "spec": spec,
            "watched_rss_mb": watched}


def warm_up() -> None:
    """Pay torch's one-off lazy imports before any clock starts: constructing the first torch.optim.Adam
    imports torch._dynamo (about 1 s), which would otherwise land in whichever method runs first."""
    p = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.Adam([p])
    (p * p).sum().backward()
    opt.step()
    torch.linalg.eigh(torch.eye(4, dtype=torch.float64))
    torch.linalg.cholesky(torch.eye(4, dtype=torch.float64))


def prime() -> None:
    """Import everything once in a throwaway interpreter (compiles stale .pyc files, warms the OS file
    cache for the libraries) so that the first measured worker is not the slow one."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = ("import sys; sys.path.insert(0, %r); import _common; _common.warm_up(); "
            "import ssae, ssae.train, ssae.metrics, ssae.demo" % str(Path(__file__).resolve().parent))
    subprocess.run([sys.executable, "-c", code], env=env, check=False, capture_output=True)


def worker_reply(result: dict) -> None:
    """Print a worker's result as the last line of stdout (what run_worker reads)."""
    print(json.dumps(result), flush=True)


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "ram_gib": mem,
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def source_digest() -> str:
    """sha256 (16 hex) of ssae/*.py, so every result names the code it measured (ssae changes often)."""
    import hashlib
    h = hashlib.sha256()
    for f in sorted((ROOT / "ssae").glob("*.py")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def save_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
               "ssae_source": source_digest()} | payload
    path.write_text(json.dumps(payload, indent=1))
    return path


def md_table(header: list[str], rows: list[list]) -> str:
    def fmt(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else ("—" if v is None else str(v))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def warm_file_cache(path: str | Path | list) -> None:
    """Read a file, a folder or a list of files once so that the first method measured does not pay for
    the cold disk."""
    if isinstance(path, list):
        files = [Path(p) for p in path]
    else:
        path = Path(path)
        files = [path] if path.is_file() else sorted(path.glob("*"))
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


# -- data sets ------------------------------------------------------------------------------------

def ensure_demo_features(path: str | Path, n_prompts: int | None) -> Path:
    """The cached MiniLM demo features (ssae.demo.build_features), built when missing."""
    path = Path(path)
    if not path.exists():
        from ssae.demo import build_features
        print(f"building demo features {path} ({n_prompts or 'all'} prompts; needs the demo extra) ...", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        build_features(path, n_prompts)
    return path


WIDE_VOCAB_EXTRA = {"situration": ["in a library"], "action": ["holding a knife"],
                    "light": ["at dawn", "at noon", "at sunset", "at night", "in the fog", "under neon lights"]}
"""What `wide_vocabulary` adds to the shipped portrait vocabulary: a 12th situation, the action of the
reference's v2 vocabulary ("holding a knife", where v1 has "smoking a cigarette"), and a 6-phrase light
category, for 2·2·12·3·2·5·4·6 = 34,560 combinations, the size of issue #13's sparse-coverage vocabulary."""


def wide_vocabulary():
    from ssae import Vocabulary
    cats = {k: list(v) for k, v in Vocabulary.portraits().categories.items()}
    for k, extra in WIDE_VOCAB_EXTRA.items():
        cats[k] = cats.get(k, []) + extra
    return Vocabulary(cats)


def ensure_minilm_features(path: str | Path, kind: str) -> Path:
    """Benchmark feature sets encoded with MiniLM like the demo's (cached; built when missing):
    - "dense24": 2880 of the 4224 portrait prompts, 24 tokens (9216 values), 4 held-out pairs;
    - "wide": 1500 of the 34,560 prompts of `wide_vocabulary()` (sparse coverage), 40 tokens, 5 held-out pairs."""
    path = Path(path)
    if path.exists():
        return path
    from ssae import Vocabulary, save_features
    from ssae.encoders import MiniLMEncoder
    from ssae.vocab import split_heldout_pairs
    vocab, n, tokens, pairs = {"dense24": (Vocabulary.portraits(), 2880, 24, 4),
                               "wide": (wide_vocabulary(), 1500, 40, 5)}[kind]
    print(f"building {kind} features {path} ({n} prompts, {tokens} tokens; needs the demo extra) ...", flush=True)
    combos = vocab.sample_combinations(n, 0)
    split = split_heldout_pairs(combos, vocab.random_pairs(pairs, 0))
    prompts = [vocab.prompt(c) for c in combos]
    enc = MiniLMEncoder(max_tokens=tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_features(path, enc.encode(prompts).flatten(1), vocab, [list(c) for c in combos], split, prompts,
                         "minilm.last_hidden_state", list(enc.feature_shape))


def synthetic_folder(folder: str | Path, n_total: int, feature_shape, n_write: int | None = None, seed: int = 0,
                     shard_rows: int = 50, rank: int = 8, heldout_pairs: int = 4, noise: float = 0.35) -> Path:
    """A sharded fp16 feature-set folder of portrait-vocabulary samples with additive + interaction
    structure, written with ssae.append_features.

    x = mu + s * (M V / sqrt(7) + gelu(M A + c) U / sqrt(r) + noise * eps), M the [n, 28] concept mask,
    per-dimension scales s log-normal (activations of very different sizes, like a transformer's).
    The data set has n_total rows (combinations and held-out-pair split fixed by it); only the first
    n_write are written now, and a later call with a larger n_write appends the missing shards, so one
    folder serves every N. heldout_pairs=0 writes no split (every row is training data)."""
    from ssae import Vocabulary, append_features, load_features
    from ssae.shapes import n_features_of
    from ssae.vocab import split_heldout_pairs

    folder = Path(folder)
    F = n_features_of(feature_shape)
    n_write = n_total if n_write is None else min(n_write, n_total)
    params = {"n_total": n_total, "F": F, "feature_shape": feature_shape, "seed": seed, "shard_rows": shard_rows,
              "rank": rank, "heldout_pairs": heldout_pairs, "noise": noise}
    info = folder / "synthetic.json"
    have = 0
    if (folder / "manifest.json").exists():
        if not info.exists() or json.loads(info.read_text()) != params:
            raise SystemExit(f"{folder} holds another data set: delete it or give another path")
        have = len(load_features(folder))
        if have >= n_write:
            return folder
    folder.mkdir(parents=True, exist_ok=True)
    info.write_text(json.dumps(params))
    vocab = Vocabulary.portraits()
    combos = vocab.sample_combinations(n_total, seed)
    split = split_heldout_pairs(combos, vocab.random_pairs(heldout_pairs, seed)) if heldout_pairs else None
    M = vocab.mask([list(c) for c in combos])
    K = vocab.n_concepts
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, rank, generator=g)
    c = torch.randn(rank, generator=g)
    code = torch.nn.functional.gelu(M @ A + c)  # [n, r] the interaction part of the code
    t = time.perf_counter()
    print(f"writing synthetic features {folder}: rows {have}..{n_write} of {n_total}, {F:,} fp16 features, "
          f"shards of {shard_rows} ...", flush=True)
    V, U, s, mu = torch.empty(K, F), torch.empty(rank, F), torch.empty(F), torch.empty(F)
    for a in range(0, F, 1 << 20):  # column parameters in blocks, the same for any n
        b = min(F, a + (1 << 20))
        V[:, a:b] = torch.randn(K, b - a, generator=g) / math.sqrt(7)
        U[:, a:b] = torch.randn(rank, b - a, generator=g) / math.sqrt(rank)
        s[a:b] = torch.exp(0.75 * torch.randn(b - a, generator=g))
        mu[a:b] = 0.5 * torch.randn(b - a, generator=g)
    for start in range(have, n_write, shard_rows):
        rows = slice(start, min(n_total, start + shard_rows))
        eps = torch.randn(rows.stop - rows.start, F, generator=torch.Generator().manual_seed(seed * 100003 + start))
        x = M[rows] @ V + code[rows] @ U
        x.add_(eps, alpha=noise).mul_(s).add_(mu)
        del eps
        append_features(folder, x.half(), vocab, [list(cb) for cb in combos[rows]],
                        None if split is None else split[rows], site="synthetic.sd35_conditioning",
                        feature_shape=feature_shape)
        del x
    print(f"  done in {time.perf_counter() - t:.0f}s", flush=True)
    return folder


def first_rows(data, n: int):
    """The first n rows of a (sharded) feature set, as a FeatureSet, without copying anything.
    Whole shards are kept; n is rounded up to a shard boundary."""
    kept, total = 0, 0
    while total < n and kept < len(data.counts):
        total += data.counts[kept]
        kept += 1
    def cut(v):
        return None if v is None else v[:total]
    return replace(data, shards=data.shards[:kept], counts=data.counts[:kept], labels=data.labels[:total],
                   split=cut(data.split), prompts=cut(data.prompts))
