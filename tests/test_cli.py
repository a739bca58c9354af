import json
import subprocess
import sys

import ssae
from ssae.cli import main

from builders import make_features


def test_train_eval_inspect(tmp_path, capsys):
    feats = make_features(tmp_path / "f.safetensors")
    model = tmp_path / "m.safetensors"
    assert main(["train", str(feats), "--out", str(model), "--epochs", "5", "--device", "cpu"]) == 0
    assert "test: explained variance" in capsys.readouterr().out
    assert main(["eval", str(model), str(feats), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert {"explained_variance", "cosine", "mse", "n"} <= set(m) and m["n"] == len(ssae.load_features(feats).indices("test"))
    assert main(["inspect", str(model)]) == 0
    out = capsys.readouterr().out
    assert "site: test.site" in out and "hair: A blond girl, A brunette girl" in out


def test_bad_files_exit_2_with_the_problem_named(tmp_path, capsys):
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    assert main(["inspect", str(tmp_path / "junk.safetensors")]) == 2
    assert "damaged or not a .safetensors file" in capsys.readouterr().err
    feats = make_features(tmp_path / "f.safetensors")
    assert main(["eval", str(feats), str(feats)]) == 2
    assert "not an SSAE file" in capsys.readouterr().err


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "ssae", "--help"], capture_output=True, text=True, check=True).stdout
    assert all(cmd in out for cmd in ("train", "eval", "inspect", "baselines", "demo"))
