"""Untrusted files: truncated, bit-flipped, mutated and hand-crafted inputs end in the project's own errors.

Every case either loads (and the loaded object works) or raises a `SSAEError` subclass: never another
exception, never a hang (a per-example alarm), never a big allocation (the address space of this process
is capped while fuzzing; the worst cases run in a subprocess under RLIMIT_AS and a peak-RSS check).
"""
import contextlib
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from builders import make_features
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

import ssae
from ssae import FeatureFileError, ModelFileError, SSAEError
from ssae.preprocess import PreprocessConfig
from ssae.safefile import MAX_HEADER_BYTES
from ssae.train import PRESETS, with_overrides

SETTINGS = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ROOT = Path(__file__).resolve().parent.parent


class Quiet(dict):
    """A fixture value that hypothesis prints as its name, not as kilobytes of file contents."""

    def __repr__(self) -> str:
        return f"<{self.get('name', 'fixture')}>"


# -- files under test -----------------------------------------------------------------------------

def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.fixture(scope="module", autouse=True)
def capped_address_space():
    """While this module fuzzes, an allocation of more than ~2 GiB fails instead of swapping the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_size() + (2 << 30) if _vm_size() else resource.RLIM_INFINITY
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def on_cpu(recipe, **train):
    """Training on the CPU: under the address-space cap a CUDA context could not even start."""
    return with_overrides(recipe, device="cpu", **train)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Valid files: a feature set, three SSAEs (additive; top-k with pre.index/pre.fill; mlp) and a folder."""
    d = tmp_path_factory.mktemp("fuzz")
    feats = make_features(d / "f.safetensors", n_features=8, repeats=1)
    data = ssae.load_features(feats)
    additive = ssae.train(data, on_cpu(PRESETS["additive"])).ssae.save(d / "additive.safetensors")
    topk = ssae.train(data, on_cpu(replace(PRESETS["additive"], preprocess=PreprocessConfig(top_k=5)))).ssae \
        .save(d / "topk.safetensors")
    small = replace(PRESETS["default"], model=replace(PRESETS["default"].model, hidden=4, d=2))
    mlp = ssae.train(data, on_cpu(small, epochs=2)).ssae.save(d / "mlp.safetensors")
    folder = d / "set"
    x = torch.arange(12.0).reshape(3, 4)
    for i in range(2):
        ssae.append_features(folder, x + i, ssae.Vocabulary({"c": ["x", "y"]}), [["x"], ["y"], []])
    return Quiet(name="files", dir=d, features=feats.read_bytes(), additive=additive.read_bytes(),
                 topk=topk.read_bytes(), mlp=mlp.read_bytes(), folder=folder)


MODELS = ["additive", "mlp"]


def use_model(path):
    s = ssae.SSAE.load(path)
    c = s.vocabulary.concepts
    s.unflatten(s.compose({c[0]: 1.0, c[-1]: 0.5}))
    s.delta(add=[c[1]], remove=[c[0]], n_contexts=4)
    s.reconstruct([[c[0]]])


def use_features(path):
    fs = ssae.load_features(path)
    x = fs.load()
    assert x.shape == (len(fs), fs.n_features)
    fs.mask()
    fs.indices("train")


@contextlib.contextmanager
def alarm(seconds: int = 10):
    """Turn a hang into a failure."""
    def on_alarm(*_):
        raise TimeoutError(f"no answer within {seconds} s: a hang")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def outcome(path, loader) -> str:
    """'ok' or the name of the project's error; any other exception (or a hang) fails the test."""
    with alarm():
        try:
            loader(path)
        except SSAEError as e:
            return type(e).__name__
    return "ok"


def check(files, data: bytes, loader, error=SSAEError) -> str:
    path = files["dir"] / "case.safetensors"
    path.write_bytes(data)
    result = outcome(path, loader)
    assert result == "ok" or issubclass(getattr(ssae, result), error), result
    event(result)
    return result


def header_len(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


# -- truncation and bit flips ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["features", *MODELS, "topk"])
def test_every_truncation_is_refused(files, kind):
    """A file cut at any offset is refused with the loader's own error (a cut can never go unnoticed)."""
    data = files[kind]
    loader, error = (use_features, FeatureFileError) if kind == "features" else (ssae.SSAE.load, ModelFileError)
    path = files["dir"] / f"cut-{kind}.safetensors"
    step = max(1, len(data) // 1500)
    for cut in sorted(set(range(0, len(data), step)) | set(range(header_len(data) - 8, header_len(data) + 8))):
        path.write_bytes(data[:cut])
        with alarm(), pytest.raises(error):
            loader(path)


def flips(region: str):
    """Bit flips (position, bit) inside the header or the data region; positions are wrapped later."""
    return st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 7)), min_size=1, max_size=6) \
        .map(lambda f: (region, f))


def flipped(data: bytes, region_flips) -> bytes:
    region, fl = region_flips
    lo, hi = (0, header_len(data)) if region == "header" else (header_len(data), len(data))
    out = bytearray(data)
    for pos, bit in fl:
        out[lo + pos % (hi - lo)] ^= 1 << bit
    return bytes(out)


@SETTINGS
@given(kind=st.sampled_from(["features", *MODELS]), f=st.one_of(flips("header"), flips("data")))
def test_bit_flips(files, kind, f):
    check(files, flipped(files[kind], f), use_features if kind == "features" else use_model)


@SETTINGS
@given(f=st.one_of(flips("header"), flips("data")))
def test_bit_flips_top_k_model_loads_or_is_refused(files, f):
    check(files, flipped(files["topk"], f), use_model, ModelFileError)


@SETTINGS
@given(data=st.one_of(
    st.binary(max_size=600),
    st.builds(lambda n, rest: struct.pack("<Q", n) + rest, st.integers(0, (1 << 64) - 1), st.binary(max_size=600)),
    st.builds(lambda rest, junk: struct.pack("<Q", len(rest)) + rest + junk,
              st.text(max_size=300).map(str.encode), st.binary(max_size=64))))
def test_random_bytes(files, data):
    check(files, data, use_features, FeatureFileError)
    check(files, data, use_model, ModelFileError)


# -- structured mutations of valid files ----------------------------------------------------------

INTERESTING_INTS = [0, 1, -1, 2, 3, 5, 8, 2**31, 2**40, 2**62, 2**63, 2**64, -(2**63), 10**30]
json_scalars = st.one_of(st.none(), st.booleans(), st.sampled_from(INTERESTING_INTS), st.integers(),
                         st.floats(), st.text(max_size=6))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c,
                                                                                                max_size=4),
                           max_leaves=8)


def read(data: bytes):
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"ssae-fuzz-read-{os.getpid()}.safetensors"
    path.write_bytes(data)
    try:
        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    finally:
        path.unlink()


@pytest.fixture(scope="module")
def parsed(files):
    return Quiet({k: read(files[k]) for k in ("features", *MODELS, "topk")}, name="parsed")


def mutate_meta(draw, meta: dict[str, str]) -> dict[str, str]:
    meta = dict(meta)
    for _ in range(draw(st.integers(1, 2))):
        key = draw(st.sampled_from(sorted(meta) + ["ssae.extra"]))
        how = draw(st.sampled_from(["field", "field", "field", "value", "text", "delete"]))
        if how == "delete":
            meta.pop(key, None)
        elif how == "text":
            meta[key] = draw(st.text(max_size=20))
        elif how == "value" or key not in meta:
            meta[key] = json.dumps(draw(json_values))
        else:
            try:
                doc = json.loads(meta[key])
            except ValueError:
                doc = meta[key]
            if isinstance(doc, dict) and doc:
                k = draw(st.sampled_from(sorted(doc)))
                if isinstance(doc[k], list) and doc[k] and draw(st.booleans()):
                    doc[k][draw(st.integers(0, len(doc[k]) - 1))] = draw(json_values)
                else:
                    doc[k] = draw(json_values)
            elif isinstance(doc, list) and doc:
                doc[draw(st.integers(0, len(doc) - 1))] = draw(json_values)
            elif isinstance(doc, list):
                doc.append(draw(json_values))
            else:
                doc = draw(json_values)
            meta[key] = json.dumps(doc)
    return meta


def save_case(files, tensors, meta) -> Path:
    path = files["dir"] / "mutant.safetensors"
    save_file(tensors, str(path), metadata=meta)
    return path


@SETTINGS
@given(kind=st.sampled_from(["features", *MODELS, "topk"]), data=st.data())
def test_metadata_mutations(files, parsed, kind, data):
    tensors, meta = parsed[kind]
    meta = mutate_meta(data.draw, meta)
    path = save_case(files, tensors, meta)
    if kind == "features":
        result = outcome(path, use_features)
        assert result in ("ok", "FeatureFileError"), result
        event(result)
        return
    result = outcome(path, use_model)
    # a count of 0 in ssae.concept_counts is a valid file whose concept compose refuses (VocabularyError)
    assert result in ("ok", "ModelFileError", "VocabularyError"), result
    event(result)


def tensor_mutation(t: torch.Tensor):
    dtypes = [torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.uint8, torch.bool]
    return st.one_of(
        st.just(None),  # dropped
        st.sampled_from(dtypes).map(lambda dt: t.to(dt)),
        st.sampled_from([float("nan"), float("inf"), -1e30, 0.0]).map(lambda v: torch.full(t.shape, v)),
        st.just(t.reshape(-1)), st.just(t.reshape(1, -1)), st.just(t[:1]), st.just(torch.cat([t, t])),
    )


@SETTINGS
@given(kind=st.sampled_from(["features", *MODELS, "topk"]), data=st.data())
def test_tensor_mutations(files, parsed, kind, data):
    tensors, meta = parsed[kind]
    tensors = dict(tensors)
    names = st.lists(st.sampled_from(sorted(tensors)), min_size=1, max_size=min(2, len(tensors)), unique=True)
    for name in data.draw(names):
        new = data.draw(tensor_mutation(tensors[name]))
        if new is None:
            del tensors[name]
        else:
            tensors[name] = new.contiguous()
    if data.draw(st.booleans()):
        tensors["extra"] = torch.zeros(3)
    path = save_case(files, tensors, meta)
    if kind == "features":
        result = outcome(path, use_features)
        assert result in ("ok", "FeatureFileError"), result
        event(result)
        return
    result = outcome(path, use_model)
    assert result in ("ok", "ModelFileError"), result
    event(result)


# -- hand-crafted headers -------------------------------------------------------------------------

def header_file(entries: dict | bytes, meta: dict | None = None, data: bytes = b"\x00" * 64) -> bytes:
    if isinstance(entries, bytes):
        raw = entries
    else:
        h = dict(entries)
        if meta is not None:
            h["__metadata__"] = meta
        raw = json.dumps(h).encode()
    return struct.pack("<Q", len(raw)) + raw + data


F44 = {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}
VOCAB2 = json.dumps({"c": ["x", "y"]})
GOOD_META = {"ssae.vocabulary": VOCAB2, "ssae.labels": json.dumps([["x"]] * 4)}


@pytest.mark.parametrize("entries, meta", [
    ({"features": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 64]}}, GOOD_META),
    ({"features": {"dtype": "F32", "shape": [2**20, 2**20, 2**20], "data_offsets": [0, 2**62]}}, GOOD_META),
    ({"features": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 2**64 + 64]}}, GOOD_META),
    ({"features": {"dtype": "F32", "shape": [4, 4], "data_offsets": [64, 0]}}, GOOD_META),
    ({"features": {"dtype": "F32", "shape": [4, 4], "data_offsets": [-64, 0]}}, GOOD_META),
    ({"features": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 64]}}, GOOD_META),
    ({"features": {"dtype": "F32", "shape": [-4, -4], "data_offsets": [0, 64]}}, GOOD_META),
    ({"features": {"dtype": "F32", "shape": [2.5, 4], "data_offsets": [0, 64]}}, GOOD_META),
    ({"features": {"dtype": "F32", "shape": [4.0, 4.0], "data_offsets": [0, 64]}}, GOOD_META),
    ({"features": {"dtype": "F32", "shape": [True, 16], "data_offsets": [0, 64]}}, GOOD_META),
    ({"features": {"dtype": "F32", "shape": "44", "data_offsets": [0, 64]}}, GOOD_META),
    ({"features": {"dtype": ["F32"], "shape": [4, 4], "data_offsets": [0, 64]}}, GOOD_META),
    ({"features": {"dtype": "Q99", "shape": [4, 4], "data_offsets": [0, 64]}}, GOOD_META),
    ({"features": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 6400]}}, GOOD_META),
    ({"features": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64.0]}}, GOOD_META),
    ({"features": {"dtype": "F32", "shape": [0, 2**62], "data_offsets": [0, 0]}}, GOOD_META | {"ssae.labels": "[]"}),
    ({"features": {"dtype": "F32", "shape": [4, 0], "data_offsets": [0, 0]}}, GOOD_META),
    ({"features": {"dtype": "F32", "shape": [4] + [1] * 100_000, "data_offsets": [0, 16]}}, GOOD_META),
    (b'{"features": {"dtype": "F32", "shape": [' + b", ".join([b"9" * 4000] * 300) + b'], "data_offsets": [0, 64]}}',
     None),
    (b'{"features": {"dtype": "F32", "shape": [' + b"1" * 5000 + b', 4], "data_offsets": [0, 64]}}', None),
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
    (b'{"a": ' + b"{\"b\": " * 50_000 + b"1" + b"}" * 50_000 + b"}", None),
    (b'{"a": 1, "a": 2}', None),
    (b"\xef\xbb\xbf{}", None),
    ({"a": F44, "b": {"dtype": "F32", "shape": [2, 4], "data_offsets": [32, 64]}}, GOOD_META),
    ({"features": F44, "__metadata__": {"k": 5}}, None),
    ({"features": F44, "__metadata__": ["k"]}, None),
    ({"features": F44}, GOOD_META | {"ssae.labels": 5}),
    ({"features": F44}, GOOD_META | {"ssae.labels": "[]"}),
    ({"features": F44}, GOOD_META | {"ssae.labels": json.dumps([["x"]] * 3)}),
    ({"features": F44}, GOOD_META | {"ssae.labels": json.dumps([["x"]] * 40)}),
    ({"features": F44}, GOOD_META | {"ssae.labels": json.dumps(["x"] * 4)}),
    ({"features": F44}, GOOD_META | {"ssae.labels": json.dumps([[1]] * 4)}),
    ({"features": F44}, GOOD_META | {"ssae.labels": json.dumps([["zzz"]] * 4)}),
    ({"features": F44}, GOOD_META | {"ssae.labels": "[" + "1" * 5000 + "]"}),
    ({"features": F44}, GOOD_META | {"ssae.labels": "[" * 100_000 + "]" * 100_000}),
    ({"features": F44}, GOOD_META | {"ssae.vocabulary": json.dumps({"c": ["x"] * 3})}),
    ({"features": F44}, GOOD_META | {"ssae.vocabulary": json.dumps(["x", "y"])}),
    ({"features": F44}, GOOD_META | {"ssae.vocabulary": json.dumps({"c": [f"x{i}" for i in range(200_000)]})}),
    ({"features": F44}, GOOD_META | {"ssae.feature_shape": "[5]"}),
    ({"features": F44}, GOOD_META | {"ssae.feature_shape": "[2.0, 2.0]"}),
    ({"features": F44}, GOOD_META | {"ssae.feature_shape": "[-2, -2]"}),
    ({"features": F44}, GOOD_META | {"ssae.feature_shape": "\"4\""}),
    ({"features": F44}, GOOD_META | {"ssae.feature_shape": "[[4]]"}),
    ({"features": F44}, GOOD_META | {"ssae.feature_shape": json.dumps({"a": [2], "b": "xy"})}),
    ({"features": F44}, GOOD_META | {"ssae.feature_shape": "[" + ", ".join(["9" * 4000] * 300) + "]"}),
    ({"features": F44}, GOOD_META | {"ssae.split": json.dumps([[1]] * 4)}),
    ({"features": F44}, GOOD_META | {"ssae.split": json.dumps(["train", "test", "x", "train"])}),
    ({"features": F44}, GOOD_META | {"ssae.prompts": json.dumps([1, 2, 3, 4])}),
    ({"features": F44}, GOOD_META | {"ssae.format": "ssae-features/2"}),
    ({"features": F44}, GOOD_META | {"ssae.format": "ssae/1"}),
])
def test_hand_crafted_headers(tmp_path, entries, meta):
    """Each of these is refused by both loaders, each with its own error type."""
    path = tmp_path / "h.safetensors"
    path.write_bytes(header_file(entries, meta))
    for loader, error in ((use_features, FeatureFileError), (use_model, ModelFileError)):
        with alarm(), pytest.raises(error):
            loader(path)


def model_meta(files, parsed, **changes):
    tensors, meta = parsed["additive"]
    meta = dict(meta)
    for key, value in changes.items():
        key = "ssae." + key
        if isinstance(value, dict):
            meta[key] = json.dumps(json.loads(meta[key]) | value)
        else:
            meta[key] = value
    return save_case(files, tensors, meta)


@pytest.mark.parametrize("changes, message", [
    (dict(format="ssae/9"), "format 'ssae/1' or 'ssae/2'"),
    (dict(format="ssae-features/1"), "format 'ssae/1' or 'ssae/2'"),
    (dict(vocabulary=json.dumps({"c": [f"x{i}" for i in range(200_000)]})), "concepts"),
    (dict(vocabulary="[1]"), "inconsistent metadata"),
    (dict(model={"n_concepts": 2**40}), "concepts"),
    (dict(model={"n_features": 2**40}), "decoder writes"),
    (dict(model={"d": 2**40}), "do not match"),
    (dict(model={"d": -1}), "inconsistent metadata"),
    (dict(model={"decoder": "mlp"}), "do not match"),
    (dict(model={"code": "neither"}), "inconsistent metadata"),
    (dict(model="[]"), "inconsistent metadata"),
    (dict(preprocess=json.dumps({"top_k": "5"})), "inconsistent metadata"),
    (dict(preprocess=json.dumps({"scale": "bogus"})), "inconsistent metadata"),
    (dict(feature_shape="[2.0, 4.0]"), "inconsistent metadata"),
    (dict(feature_shape="[-2, -4]"), "inconsistent metadata"),
    (dict(feature_shape="[2, 2]"), "decoder writes"),
    (dict(feature_shape="[" + ", ".join(["9" * 4000] * 300) + "]"), "inconsistent metadata"),
    (dict(history="[" * 100_000 + "]" * 100_000), "not valid JSON"),
    (dict(history="1" * 5000), "not valid JSON"),
])
def test_hand_crafted_model_metadata(files, parsed, changes, message):
    path = model_meta(files, parsed, **changes)
    with alarm(), pytest.raises(ModelFileError, match=message):
        use_model(path)


# -- size caps ------------------------------------------------------------------------------------

def test_header_over_the_cap_is_refused_before_it_is_read(tmp_path):
    """A declared header over MAX_HEADER_BYTES (in a file that really is that long) is refused after 8 bytes."""
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{")
        f.truncate(MAX_HEADER_BYTES + 64)  # sparse: costs no disk
    for loader, error in ((ssae.SSAE.load, ModelFileError), (ssae.load_features, FeatureFileError)):
        tracemalloc.start()
        try:
            with pytest.raises(error, match="declares a"):
                loader(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20, f"{peak} bytes allocated to refuse an over-large header"


WORST_CASES = r'''
import json, resource, sys, time
import ssae
from ssae import SSAEError

def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key + ":"))

def vm():
    return status("VmSize")

def rss_mb():  # peak RSS of this process image (ru_maxrss would include the parent's peak before exec)
    return status("VmHWM") >> 20

resource.setrlimit(resource.RLIMIT_AS, (vm() + (1 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))
base = rss_mb()
out = {}
for name, kind, path in json.loads(sys.argv[1]):
    t = time.perf_counter()
    try:
        if kind == "features":
            fs = ssae.load_features(path)
            fs.load()
        else:
            ssae.SSAE.load(path)
        r = "ok"
    except SSAEError as e:
        r = type(e).__name__
    except BaseException as e:
        r = "CRASH " + type(e).__name__ + ": " + str(e)[:200]
    out[f"{name} ({kind})"] = [r, rss_mb() - base, round(time.perf_counter() - t, 2)]
print(json.dumps(out))
'''


def test_worst_cases_stay_small_under_an_address_space_limit(tmp_path):
    """Terabyte shapes, JSON bombs near the header cap and N x K label masks, in a subprocess whose address
    space is capped at 1 GiB above what it holds after import; the peak RSS growth is checked as well."""
    def write(name, entries, meta=None, data=b"\x00" * 64):
        (tmp_path / name).write_bytes(header_file(entries, meta, data))
        return str(tmp_path / name)

    near_cap = MAX_HEADER_BYTES - 4096
    lists_bomb = b"[" + b"[]," * (near_cap // 3 - 10) + b"[]]"
    k, n = 10_000, 200_000  # a valid set whose dense [N, K] label mask alone would take 8 GB
    cases = [
        ("terabyte shape", "features", write("tb.safetensors", {"features": {"dtype": "F32", "shape": [2**40, 2**40],
                                                                            "data_offsets": [0, 64]}}, GOOD_META)),
        ("terabyte shape", "model", str(tmp_path / "tb.safetensors")),
        ("2**62 columns, 0 rows", "features", write("wide.safetensors", {"features": {
            "dtype": "F32", "shape": [0, 2**62], "data_offsets": [0, 0]}}, GOOD_META | {"ssae.labels": "[]"}, b"")),
        ("header of 21M empty lists", "features", write("hb.safetensors", b'{"a": ' + lists_bomb + b"}")),
        ("header of 21M empty lists", "model", str(tmp_path / "hb.safetensors")),
        ("labels of 21M empty lists", "features", write("lb.safetensors", {"features": F44},
                                                         GOOD_META | {"ssae.labels": lists_bomb.decode()})),
        ("vocabulary of 4M concepts", "features", write("vb.safetensors", {"features": F44}, GOOD_META | {
            "ssae.vocabulary": json.dumps({"c": [f"{i:x}" for i in range(4_000_000)]})})),
        ("valid: 200k samples x 10k concepts", "features", write("nk.safetensors", {"features": {
            "dtype": "U8", "shape": [n, 1], "data_offsets": [0, n]}}, {
            "ssae.vocabulary": json.dumps({"c": [f"c{i}" for i in range(k)]}), "ssae.labels": json.dumps([[]] * n)},
            b"\x00" * n)),
    ]
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", WORST_CASES, json.dumps(cases)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout)
    expected = {f"{name} ({kind})": "ok" if name.startswith("valid") else
                ("FeatureFileError" if kind == "features" else "ModelFileError") for name, kind, _ in cases}
    assert {name: r[0] for name, r in got.items()} == expected, got
    assert all(mb < 500 and s < 30 for _, mb, s in got.values()), got


# -- feature-set folders ----------------------------------------------------------------------------

def test_valid_folder_loads(files):
    fs = ssae.load_features(files["folder"])
    assert len(fs) == 6 and torch.equal(fs.load()[3:], torch.arange(12.0).reshape(3, 4) + 1)


def manifest_case(files, tmp_path, text: str | bytes) -> Path:
    folder = tmp_path / "set"
    if not folder.exists():
        folder.mkdir()
        for p in files["folder"].iterdir():
            (folder / p.name).write_bytes(p.read_bytes())
    (folder / "manifest.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


@pytest.mark.parametrize("shard", ["../outside.safetensors", "../set/shard-00000.safetensors", "/etc/passwd",
                                   "sub/shard-00000.safetensors", "..\\outside.safetensors", ".hidden.safetensors",
                                   "..", ".", "", "C:shard-00000.safetensors", "shard-00000.safetensors\x00.txt",
                                   5, None, ["shard-00000.safetensors"]])
def test_manifest_cannot_point_outside_its_folder(files, tmp_path, shard):
    doc = json.loads((files["folder"] / "manifest.json").read_text())
    doc["shards"][0]["file"] = shard
    folder = manifest_case(files, tmp_path, json.dumps(doc))
    (tmp_path / "outside.safetensors").write_bytes((files["folder"] / "shard-00000.safetensors").read_bytes())
    with pytest.raises(FeatureFileError, match="damaged"):
        ssae.load_features(folder)
    with pytest.raises(FeatureFileError, match="damaged"):
        ssae.append_features(folder, torch.zeros(1, 4), ssae.Vocabulary({"c": ["x", "y"]}), [["x"]])


def test_manifest_containment_holds_under_python_O(files, tmp_path):
    """The shard-name check is code, not an assert: `python -O` (which strips asserts) still refuses."""
    doc = json.loads((files["folder"] / "manifest.json").read_text())
    doc["shards"][0]["file"] = "../outside.safetensors"
    folder = manifest_case(files, tmp_path, json.dumps(doc))
    (tmp_path / "outside.safetensors").write_bytes((files["folder"] / "shard-00000.safetensors").read_bytes())
    code = ("import sys, ssae\nfrom ssae.errors import FeatureFileError\ntry:\n    ssae.load_features(sys.argv[1])\n"
            "except FeatureFileError as e:\n    print('refused:', e)\nelse:\n    print('loaded')")
    r = subprocess.run([sys.executable, "-O", "-c", code, str(folder)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(Path(ssae.__file__).parents[1])))
    assert r.stdout.startswith("refused:") and "damaged" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("text", ["", "{", "null", "[]", "{}", '{"shards": 5}', '{"shards": [5]}',
                                  '{"shards": [{}]}', '{"shards": [{"file": 5}]}', "[" * 100_000 + "]" * 100_000,
                                  "1" * 5000, b"\xff\xfe{", b'{"shards": [{"file": "\xc0\xaf"}]}'])
def test_garbage_manifest(files, tmp_path, text):
    folder = manifest_case(files, tmp_path, text)
    with pytest.raises(FeatureFileError):
        ssae.load_features(folder)
    with pytest.raises(FeatureFileError):
        ssae.append_features(folder, torch.zeros(1, 4), ssae.Vocabulary({"c": ["x", "y"]}), [["x"]])


def test_manifest_over_the_cap_is_refused(files, tmp_path):
    folder = manifest_case(files, tmp_path, "")
    with open(folder / "manifest.json", "wb") as f:
        f.truncate(MAX_HEADER_BYTES + 1)
    with pytest.raises(FeatureFileError, match="damaged"):
        ssae.load_features(folder)


@SETTINGS
@given(doc=json_values, keep_shards=st.booleans())
def test_fuzzed_manifest(files, tmp_path_factory, doc, keep_shards):
    """A manifest of any JSON loads the listed shards or is refused; appending to it works or is refused."""
    tmp = tmp_path_factory.mktemp("m")
    if keep_shards and isinstance(doc, dict):
        doc["shards"] = json.loads((files["folder"] / "manifest.json").read_text())["shards"]
    folder = manifest_case(files, tmp, json.dumps(doc))
    with alarm():
        for op in (lambda: ssae.load_features(folder).load(),
                   lambda: ssae.append_features(folder, torch.zeros(1, 4), ssae.Vocabulary({"c": ["x", "y"]}),
                                                [["x"]], site="unknown")):
            try:
                op()
                event("ok")
            except FeatureFileError:
                event("FeatureFileError")
    assert {p.parent for p in tmp.rglob("*")} <= {tmp, folder}, "nothing was written outside the folder"


# -- metadata that once reached crash paths in ssae_file.py --------------------------------------


@pytest.mark.parametrize("change", [dict(d=2.0), dict(n_concepts=9.0), dict(n_features=8.0)])
def test_non_int_model_sizes_are_refused(files, parsed, change):
    """Float sizes were accepted by ModelConfig and crashed SupervisedSAE(cfg) with a TypeError."""
    cfg = json.loads(parsed["additive"][1]["ssae.model"])
    change = {k: float(cfg[k]) for k in change}
    with pytest.raises(ModelFileError):
        use_model(model_meta(files, parsed, model=change))


@pytest.mark.parametrize("n_samples", [5, 2**40])
def test_sample_code_model_with_n_samples_is_refused(files, parsed, n_samples):
    """A file's n_samples once built a [n_samples, K, d] parameter (2**40 x K x d floats: an attempted
    multi-terabyte allocation) that load_state_dict then missed."""
    with pytest.raises(ModelFileError):
        use_model(model_meta(files, parsed, model={"code": "sample", "n_samples": n_samples}))


@pytest.mark.parametrize("index", ["float", "out of range", "negative"])
def test_damaged_pre_index_is_refused(files, parsed, index):
    """pre.index once reached Preprocessor unchecked (dtype, range), and compose raised IndexError."""
    tensors, meta = parsed["topk"]
    i = tensors["pre.index"]
    bad = {"float": i.float(), "out of range": i + 100, "negative": -i - 100}[index]
    with pytest.raises(ModelFileError):
        use_model(save_case(files, tensors | {"pre.index": bad}, meta))
