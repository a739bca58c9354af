"""ssae.cli in-process: train -> eval --json -> inspect, errors as exit code 2, and `python -m ssae`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from builders import make_features

import ssae
from ssae.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    feats = make_features(d / "f.safetensors")
    model = d / "m.safetensors"
    assert main(["train", str(feats), "--out", str(model), "--preset", "additive", "--device", "cpu"]) == 0
    return feats, model


def test_train_eval_inspect(tmp_path, capsys):
    feats = make_features(tmp_path / "f.safetensors")
    model = tmp_path / "m.safetensors"
    ckpt = tmp_path / "ckpt.safetensors"
    assert main(["train", str(feats), "--out", str(model), "--epochs", "3", "--device", "cpu", "--seed", "1",
                 "--checkpoint", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {model}" in out and "test: explained variance" in out and ckpt.exists()
    s = ssae.SSAE.load(model)
    assert s.info["training"]["train"]["epochs"] == 3 and s.info["training"]["train"]["seed"] == 1
    assert s.info["metrics"]["test"]["n"] == len(ssae.load_features(feats).indices("test"))

    assert main(["eval", str(model), str(feats), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert {"explained_variance", "cosine", "mse", "n"} == set(m)
    assert m["n"] == len(ssae.load_features(feats).indices("test"))
    # the stored metrics are the trained model's; the file holds its readout in half precision
    assert m["explained_variance"] == pytest.approx(s.info["metrics"]["test"]["explained_variance"], abs=1e-4)
    assert main(["eval", str(model), str(feats), "--split", "train"]) == 0
    assert capsys.readouterr().out.startswith("train: explained variance")

    assert main(["inspect", str(model)]) == 0
    out = capsys.readouterr().out
    assert "site: test.site" in out and "hair: A blond girl, A brunette girl" in out and "mlp decoder" in out
    assert main(["inspect", str(model), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["site"] == "test.site" and doc["n_features"] == 48 and doc["model"]["decoder"] == "mlp"
    assert doc["metrics"]["test"]["n"] == m["n"] and doc["best_epoch"] == s.info["best_epoch"]


def test_train_sizes_the_ensemble(tmp_path, capsys):
    feats = make_features(tmp_path / "f.safetensors")
    model = tmp_path / "m.safetensors"
    assert main(["train", str(feats), "--out", str(model), "--epochs", "2", "--members", "3", "--hidden", "5",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    s = ssae.SSAE.load(model)
    assert s.model.cfg.hidden == 15 and len(s.info["best_epochs"]) == 3, "three members of 5 hidden units, merged"
    assert s.info["training"]["model"]["hidden"] == 5 and s.info["training"]["train"]["members"] == 3
    assert "validation EV" in out and f"{len(s.info['history'])} epochs" in out
    assert main(["train", str(feats), "--out", str(model), "--preset", "paper", "--members", "2"]) == 2
    assert "members=2 needs the gram solver" in capsys.readouterr().err


def test_baselines_command(trained, capsys):
    feats, _ = trained
    assert main(["baselines", str(feats), "--presets", "additive", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows][:2] == ["SSAE additive", "train mean"] and len(rows) == 5


def test_bad_files_exit_2_with_the_problem_named(trained, tmp_path, capsys):
    feats, model = trained
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    assert main(["inspect", str(tmp_path / "junk.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssae: error: junk.safetensors") and "damaged or not a .safetensors file" in err
    assert main(["eval", str(feats), str(feats)]) == 2
    assert "not an SSAE file" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "no feature set at" in capsys.readouterr().err and not (tmp_path / "m.safetensors").exists()
    other = make_features(tmp_path / "g.safetensors", n_features=20)
    assert main(["eval", str(model), str(other)]) == 2
    assert "decodes 48 features" in capsys.readouterr().err
    assert main(["eval", str(model), str(make_features(tmp_path / "u.safetensors", heldout=None))]) == 2
    assert "'test' split of this feature set is empty" in capsys.readouterr().err


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as e:
        main(["train", "f.safetensors", "--out", "m.safetensors", "--preset", "nonsense"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2


def test_module_entry_point_help():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "ssae", "--help"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert all(cmd in run.stdout for cmd in ("train", "eval", "inspect", "baselines", "demo"))
    bad = subprocess.run([sys.executable, "-m", "ssae", "inspect", "/nonexistent/m.safetensors"], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "ssae: error: cannot read /nonexistent/m.safetensors" in bad.stderr


def test_the_version_is_the_one_pyproject_states():
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert ssae.__version__ == re.search(r'^version = "([^"]+)"', text, re.M).group(1)
