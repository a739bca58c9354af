"""ssae.report: comparison rows, the Markdown table and the figures."""
import pytest
from builders import make_features

import ssae
from ssae.presets import PRESETS, with_overrides
from ssae.report import baseline_rows, format_table, loss_curve_image, plot_report
from ssae.train import train

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return ssae.load_features(make_features(tmp_path_factory.mktemp("r") / "f.safetensors"))


def test_rows_table_and_figure(data, tmp_path):
    results = {"additive": train(data, PRESETS["additive"]),
               "paper": train(data, with_overrides(PRESETS["paper"], epochs=3))}
    rows = baseline_rows(data, ["additive", "paper"], results, n_latents=8, topk=2, epochs=1)
    assert [r["method"] for r in rows[:2]] == ["SSAE additive", "SSAE paper"] and len(rows) == 6
    ssae_row = rows[0]
    assert ssae_row["sees_test_features"] is False and ssae_row["n"] == len(data.indices("test"))
    assert ssae_row["alignment"] > 0.9 and 0.0 <= ssae_row["decorrelation"] <= 1.0
    assert [r["sees_test_features"] for r in rows[2:]] == [False, False, True, True]
    table = format_table(rows)
    lines = table.splitlines()
    assert len(lines) == 2 + len(rows) and lines[0].startswith("| method | held-out explained variance")
    assert f"| SSAE additive | {rows[0]['explained_variance']:.3f} |" in table
    assert "| train mean |" in table and "| – |" in table, "a missing alignment prints as a dash"
    png = plot_report({n: r.history for n, r in results.items()}, rows, tmp_path / "out" / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_loss_curve_image():
    hist = [{"epoch": i, "loss": 1.0 / (i + 1), "val": 1.2 / (i + 1)} for i in range(5)]
    img = loss_curve_image(hist, size=(320, 200))
    assert img.shape == (200, 320, 3) and img.dtype.name == "uint8" and img.std() > 0
    assert loss_curve_image([], size=(320, 200)).shape == (200, 320, 3), "closed-form runs have no curve"
    members = [h | {"member": h["epoch"] // 3, "ensemble": 0.9 * h["val"]} for h in hist]
    assert loss_curve_image(members, size=(320, 200)).std() > 0


def test_table_formats_values():
    row = {"method": "m", "explained_variance": 0.12345, "cosine": 0.5, "mse": 1234.5678, "alignment": None,
           "sees_test_features": True}
    assert format_table([row]).splitlines()[-1] == "| m | 0.123 | 0.500 | 1235 | – | yes |"


def test_cli_bar_ends_full_when_training_stops_early(capsys):
    """Early stopping ends a run before its epoch budget: the bar then shows the epochs run as complete, not a
    run stuck at 47 of 48."""
    from ssae.progress import tqdm_progress
    with tqdm_progress("train") as update:
        for epoch in range(1, 48):
            update(epoch, 48, {"loss": 0.1, "val": 0.05})
    err = capsys.readouterr().err
    assert "47/47" in err and "100%" in err
