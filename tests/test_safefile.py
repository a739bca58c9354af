"""ssae.safefile: the header is validated before anything is allocated, and saves are atomic."""
import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

import ssae.safefile
from ssae.errors import FeatureFileError, SSAEError
from ssae.safefile import MAX_HEADER_BYTES, TensorInfo, atomic_save, atomic_write_text, json_meta, read_header


def raw_file(path, header: dict | bytes, data: bytes = b"\x00" * 64, declared: int | None = None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if declared is None else declared) + raw + data)
    return path


F32_4x4 = {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}


def test_accepts_a_valid_file_and_reports_its_table(tmp_path):
    p = tmp_path / "ok.safetensors"
    save_file({"a": torch.zeros(2, 3), "b": torch.zeros(5, dtype=torch.bfloat16), "c": torch.zeros(0, 4)}, str(p),
              metadata={"k": "v"})
    tensors, meta = read_header(p)
    assert meta == {"k": "v"} and set(tensors) == {"a", "b", "c"}
    assert tensors["a"].dtype == "F32" and tensors["a"].shape == (2, 3) and tensors["a"].end - tensors["a"].start == 24
    assert tensors["b"] == TensorInfo("BF16", (5,), tensors["b"].start, tensors["b"].start + 10)
    assert tensors["c"].shape == (0, 4)
    assert read_header(raw_file(tmp_path / "hand.safetensors", {"x": F32_4x4}))[0]["x"].shape == (4, 4)


@pytest.mark.parametrize("header, data, declared, message", [
    ({"x": F32_4x4}, b"\x00" * 64, 1 << 40, "declares a 1099511627776-byte header"),
    ({"x": F32_4x4}, b"\x00" * 64, MAX_HEADER_BYTES + 1, "declares a"),
    ({"x": F32_4x4}, b"", 10_000, "declares a 10000-byte header"),
    (b"{not json", b"", None, "unreadable header \\(JSONDecodeError\\)"),
    (b"\xff\xfe\x00", b"", None, "unreadable header \\(UnicodeDecodeError\\)"),
    (b"[1, 2]", b"", None, "not a JSON object"),
    ({"x": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 6400]}}, b"\x00" * 64, None, "does not fit the file"),
    ({"x": {"dtype": "F32", "shape": [4, 4], "data_offsets": [64, 128]}}, b"\x00" * 64, None, "does not fit"),
    ({"x": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 32]}}, b"\x00" * 64, None, "does not fit"),
    ({"x": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 64]}}, b"\x00" * 64, None, "does not fit"),
    ({"a": F32_4x4, "b": {"dtype": "F32", "shape": [2, 4], "data_offsets": [32, 64]}}, b"\x00" * 64, None,
     "tensors overlap"),
    ({"x": {"dtype": "Q99", "shape": [4, 4], "data_offsets": [0, 64]}}, b"\x00" * 64, None,
     "'x' has a malformed entry"),
    ({"x": {"dtype": "F32", "shape": [-4, -4], "data_offsets": [0, 64]}}, b"\x00" * 64, None, "malformed"),
    ({"x": {"dtype": "F32", "shape": [4.0, 4], "data_offsets": [0, 64]}}, b"\x00" * 64, None, "malformed"),
    ({"x": {"dtype": "F32", "shape": [4, 4]}}, b"\x00" * 64, None, "malformed"),
    ({"x": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 32, 64]}}, b"\x00" * 64, None, "malformed"),
    ({"x": [1, 2, 3]}, b"\x00" * 64, None, "malformed"),
    ({"__metadata__": {"k": 5}}, b"", None, "not a string-to-string map"),
    ({"__metadata__": ["k"]}, b"", None, "not a string-to-string map"),
])
def test_read_header_refuses_bad_headers(tmp_path, header, data, declared, message):
    p = raw_file(tmp_path / "bad.safetensors", header, data, declared)
    with pytest.raises(SSAEError, match=message):
        read_header(p)
    with pytest.raises(FeatureFileError, match="bad.safetensors"):  # the caller picks the error type
        read_header(p, FeatureFileError)


def test_read_header_on_short_and_missing_files(tmp_path):
    (tmp_path / "short").write_bytes(b"\x00" * 7)
    with pytest.raises(SSAEError, match="too short to be a safetensors file \\(7 bytes\\)"):
        read_header(tmp_path / "short")
    with pytest.raises(SSAEError, match="cannot read"):
        read_header(tmp_path / "missing.safetensors")
    with pytest.raises(SSAEError, match="cannot read"):
        read_header(tmp_path)  # a directory


def test_json_meta():
    assert json_meta({"k": "[1, 2]"}, "k", "file", SSAEError) == [1, 2]
    assert json_meta({}, "k", "file", SSAEError, None) is None
    with pytest.raises(FeatureFileError, match="file has no 'k' metadata"):
        json_meta({}, "k", "file", FeatureFileError)
    with pytest.raises(SSAEError, match="metadata 'k' is not valid JSON"):
        json_meta({"k": "[1,"}, "k", "file", SSAEError)


def test_atomic_save_writes_a_readable_file(tmp_path):
    p = atomic_save({"x": torch.arange(6.0).reshape(2, 3).t()}, {"m": "1"}, tmp_path / "sub" / "f.safetensors")
    assert torch.equal(load_file(str(p))["x"], torch.arange(6.0).reshape(2, 3).t()), "non-contiguous input is fine"
    assert read_header(p)[1] == {"m": "1"}
    assert [q.name for q in (tmp_path / "sub").iterdir()] == ["f.safetensors"]


def test_atomic_save_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    p = atomic_save({"x": torch.ones(3)}, {"v": "old"}, tmp_path / "f.safetensors")
    before = p.read_bytes()

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{")  # a half-written new file
        raise RuntimeError("crash mid-write")

    monkeypatch.setattr(ssae.safefile, "save_file", broken)
    with pytest.raises(RuntimeError, match="crash mid-write"):
        atomic_save({"x": torch.zeros(3)}, {"v": "new"}, p)
    assert p.read_bytes() == before and read_header(p)[1] == {"v": "old"}
    assert [q.name for q in tmp_path.iterdir()] == ["f.safetensors"], "the temporary file is removed"


def test_atomic_save_keeps_the_old_file_on_keyboard_interrupt(tmp_path, monkeypatch):
    p = atomic_save({"x": torch.ones(3)}, {}, tmp_path / "f.safetensors")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ssae.safefile, "_fsync_replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"x": torch.zeros(3)}, {}, p)
    assert torch.equal(load_file(str(p))["x"], torch.ones(3))
    assert [q.name for q in tmp_path.iterdir()] == ["f.safetensors"]


def test_atomic_write_text(tmp_path, monkeypatch):
    p = atomic_write_text("one", tmp_path / "a.json")
    assert p.read_text() == "one"
    atomic_write_text("two", p)
    assert p.read_text() == "two"
    monkeypatch.setattr(ssae.safefile, "_fsync_replace", lambda *a: (_ for _ in ()).throw(OSError("no space")))
    with pytest.raises(OSError, match="no space"):
        atomic_write_text("three", p)
    assert p.read_text() == "two" and [q.name for q in tmp_path.iterdir()] == ["a.json"]
