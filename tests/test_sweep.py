"""The published-table sweep: queued commands and the comparison table, on a small fake input."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT

from attention_clusters import sweep
from attention_clusters.errors import UserError

PUBLISHED = pd.DataFrame(
    {"fc": [1, 2], "natt": [1, 8], "epochs": [200, 200], "lr": [1e-4, 5e-4], "weight_decay": [0.0, 1e-4],
     "ascend_top1_pct": [34.5, 76.4], "gpu_top1_pct": [31.8, 81.6]}
)  # fmt: skip


def revision(name, timestamp, params, eval_metrics):
    """One revision as `dvc exp show --json` (DVC 3) writes it."""
    metrics = {"metrics/eval.json": {"data": eval_metrics}, "metrics/export.json": {"data": {"batch_size": 64}}}
    data = {"rev": name, "timestamp": timestamp, "params": {"params.yaml": {"data": params}}, "metrics": metrics}
    return {"rev": name, "name": name, "data": data, "experiments": None}


def params(fc, natt, lr, wd, epochs, optimizer="adam"):
    return {"fc": fc, "natt": natt, "lr": lr, "weight_decay": wd, "epochs": epochs, "optimizer": optimizer,
            "lr_schedule": "constant", "warmup_epochs": 0, "batch_size": 64, "flash": {"seed": 0}}  # fmt: skip


def fake_show():
    old = revision(
        "pub-fc2-natt8-e30",
        "2026-01-01T10:00:00",
        params(2, 8, 5e-4, 1e-4, 30),
        {"top1": 38.09, "epochs": 30, "best_epoch": 16, "train_minutes": 6.5, "full_mnist": True},
    )
    new = revision(
        "pub-fc2-natt8-e30b",
        "2026-01-02T10:00:00",
        params(2, 8, 5e-4, 1e-4, 30),
        {
            "top1": 40.0,
            "epochs": 22,
            "best_epoch": 12,
            "train_minutes": 5.0,
            "full_mnist": True,
            "code_version": "0123456789abcdef",
        },
    )
    adamw = revision(
        "pub-fc2-natt8-w",
        "2026-01-02T11:00:00",
        params(2, 8, 5e-4, 1e-4, 30, "adamw"),
        {"top1": 74.5, "epochs": 30, "best_epoch": 29, "train_minutes": 7.25, "full_mnist": True},
    )
    other = revision("natt32", "2026-01-03T10:00:00", params(1, 32, 1e-3, 0.0, 15), {"top1": 84.09, "epochs": 15})
    baseline = revision("abc123", None, params(1, 1, 1e-3, 0.0, 200), {"top1": 48.0})
    baseline["experiments"] = [{"revs": [old]}, {"revs": [new]}, {"revs": [adamw]}, {"revs": [other]}]
    workspace = revision("workspace", None, params(1, 1, 1e-4, 0.0, 200), {})
    return json.dumps([workspace, baseline])


def test_experiments_flattens_every_revision():
    records = {r["name"]: r for r in sweep.experiments(fake_show())}
    assert set(records) == {
        "workspace",
        "abc123",
        "pub-fc2-natt8-e30",
        "pub-fc2-natt8-e30b",
        "pub-fc2-natt8-w",
        "natt32",
    }
    assert records["natt32"]["params"]["natt"] == 32 and records["natt32"]["params"]["flash.seed"] == 0
    assert records["pub-fc2-natt8-w"]["metrics"]["metrics/eval.json"]["top1"] == 74.5


def test_comparison_table():
    frame = sweep.comparison(PUBLISHED, sweep.experiments(fake_show()))
    assert list(frame.columns) == sweep.COLUMNS
    first = frame.iloc[0]  # fc=1/natt=1 at lr 1e-4: only the workspace has it, without test metrics
    assert (first.fc, first.natt, first.published_ascend, first.published_gpu) == (1, 1, 34.5, 31.8)
    assert pd.isna(first.ours_test_top1) and pd.isna(first.experiment)
    ours = frame[frame.fc == 2].set_index("optimizer")
    assert len(ours) == 2  # adam (the later of two runs) and adamw
    assert ours.loc["adam", "experiment"] == "pub-fc2-natt8-e30b" and ours.loc["adam", "ours_test_top1"] == 40.0
    assert (ours.loc["adam", "epochs"], ours.loc["adam", "best_epoch"], ours.loc["adam", "train_minutes"]) == (
        22,
        12,
        5.0,
    )
    assert ours.loc["adam", "code_version"] == "0123456789abcdef" and pd.isna(ours.loc["adamw", "code_version"])
    assert ours.loc["adamw", "ours_test_top1"] == 74.5 and ours.loc["adamw", "published_gpu"] == 81.6
    text = sweep.markdown(frame)
    lines = text.splitlines()
    assert lines[0].startswith("| fc | natt | lr | weight_decay |") and len(lines) == 2 + 3
    assert "| 2 | 8 | 0.0005 | 0.0001 | adamw | constant | 0 | 64 | 76.4 | 81.6 | 74.5 | 29 |" in text


def test_queue_commands_and_rows():
    table = sweep.published_rows(ROOT / sweep.PUBLISHED)
    assert len(table) == 16 and table.gpu_top1_pct.max() == 88.3
    picked = sweep.select(table, ["2/8", "1/32"])
    commands = sweep.queue_commands(picked, epochs=30, extra=["optimizer=adamw"])
    assert commands[0] == [
        "dvc",
        "exp",
        "run",
        "--queue",
        "-n",
        "pub-fc2-natt8-e30",
        "-S",
        "fc=2",
        "-S",
        "natt=8",
        "-S",
        "lr=0.0005",
        "-S",
        "weight_decay=0.0001",
        "-S",
        "epochs=30",
        "-S",
        "optimizer=adamw",
    ]
    assert commands[1][5] == "pub-fc1-natt32-e30"
    assert sweep.queue_commands(sweep.select(table, ["1/1"]))[0][-1] == "epochs=200"
    with pytest.raises(UserError, match="row '3/8': no published row with fc=3, natt=8"):
        sweep.select(table, ["3/8"])
    with pytest.raises(UserError, match="row 'x': expected fc/natt"):
        sweep.select(table, ["x"])


def test_table_command_writes_md_and_csv(tmp_path):
    (tmp_path / "show.json").write_text(fake_show())
    (tmp_path / "pub.csv").write_text(PUBLISHED.to_csv(index=False))
    cmd = [sys.executable, str(ROOT / "scripts/sweep.py"), "--published", "pub.csv", "table", "--json", "show.json"]
    result = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""}
    )
    assert result.returncode == 0, result.stderr
    assert "2 run(s) against 3 row(s)" in result.stdout
    csv = pd.read_csv(tmp_path / "metrics/published_comparison.csv")
    assert csv.ours_test_top1.tolist()[1:] == [40.0, 74.5]
    assert (tmp_path / "metrics/published_comparison.md").read_text().count("\n") == 5
