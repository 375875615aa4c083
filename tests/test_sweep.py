"""The published-table sweep: row order, experiment command, results table, and the resumable driver
run against a stand-in for `dvc` in a scratch git repository."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import ROOT

from attention_clusters import mnist, sweep
from attention_clusters.errors import UserError

PUBLISHED = pd.DataFrame(
    {"fc": [1, 2], "natt": [8, 8], "epochs": [200, 200], "lr": [1e-4, 5e-4], "weight_decay": [0.0, 1e-4],
     "ascend_top1_pct": [80.5, 76.4], "gpu_top1_pct": [65.0, 81.6]}
)  # fmt: skip


def test_rows_come_in_order_and_bad_names_are_refused():
    table = sweep.published_rows(ROOT / sweep.PUBLISHED)
    assert len(table) == 16 and table.gpu_top1_pct.max() == 88.3
    assert set(sweep.ORDER) == {f"{r.fc}/{r.natt}" for r in table.itertuples()}
    picked = sweep.select(table, ["1/32", "2/8"])
    assert [(r.fc, r.natt) for r in picked.itertuples()] == [(2, 8), (1, 32)]  # ORDER, not the order asked
    assert [f"{r.fc}/{r.natt}" for r in sweep.select(table).itertuples()] == list(sweep.ORDER)
    with pytest.raises(UserError, match="row '3/8': no published row with fc=3, natt=8"):
        sweep.select(table, ["3/8"])
    with pytest.raises(UserError, match="row 'x': expected fc/natt"):
        sweep.select(table, ["x"])


def test_experiment_runs_the_row_at_its_own_settings_on_full_mnist():
    row = next(PUBLISHED.itertuples(index=False))
    argv = sweep.experiment_argv(row, "/data/mnist", 20)
    assert argv[:5] == ["dvc", "exp", "run", "-n", "fc1-natt8"]
    settings = dict(a.split("=", 1) for a in argv[6::2])
    assert argv[5::2] == ["-S"] * len(settings)
    assert settings == {
        "fc": "1", "natt": "8", "lr": "0.0001", "weight_decay": "0", "epochs": "200", "patience": "20",
        "report_test": "true", "mnist.source": "folder", "mnist.folder": "/data/mnist",
    }  # fmt: skip


def record(row, top1=50.0, epochs=200):
    eval_metrics = {"top1": top1, "full_mnist": True, "code_version": "abc"}
    info = {"best_epoch": 150, "best_test_top1_any_epoch": top1 + 1, "best_test_epoch": 140, "epochs": epochs}
    return sweep.result(row, eval_metrics, dict(info, train_minutes=12.5), 200, 20, "some CPU")


def test_results_table_replaces_a_row_and_keeps_the_order():
    fc1, fc2 = PUBLISHED.itertuples(index=False)
    table = sweep.merge(pd.DataFrame(columns=sweep.COLUMNS), record(fc1, 40.0))
    table = sweep.merge(table, record(fc2, 70.0, epochs=120))
    table = sweep.merge(table, record(fc1, 45.0))
    assert list(table.columns) == sweep.COLUMNS
    assert [(r.fc, r.natt) for r in table.itertuples()] == [(1, 8), (2, 8)]
    first, second = table.iloc[0], table.iloc[1]
    assert (first.ours_val_selected, first.ours_best_on_test, first.published_ascend) == (45.0, 46.0, 80.5)
    assert (bool(first.stopped_early), bool(second.stopped_early), second.epochs_run) == (False, True, 120)
    lines = sweep.markdown(table).splitlines()
    assert lines[0].startswith("| fc | natt | lr | weight_decay | published_ascend |") and len(lines) == 4
    published, ours = "| 1 | 8 | 0.0001 | 0 | 80.5 | 65 |", " 45 | 46 | 150 | 140 | 200 | 20 | 200 | False | 12.5 |"
    assert published + ours + " True | some CPU | abc |" in lines


FAKE_DVC = """#!{python}
import json, os, sys
import yaml
from pathlib import Path
from attention_clusters import inputs
forced = "--force" in sys.argv
sys.argv.remove("--force") if forced else None
if sys.argv[2] == "remove":
    Path("removed").open("a").write(sys.argv[3] + "\\n")
    sys.exit(1)  # as dvc when there is no such experiment
assert Path("params.yaml").read_text() == "natt: 1\\n"  # the committed params, not the last row's
settings = dict(a.split("=", 1) for a in sys.argv[6::2])
params = {{}}
for key, value in settings.items():  # as dvc exp run -S writes them
    *parents, last = key.split(".")
    node = params
    for part in parents:
        node = node.setdefault(part, {{}})
    node[last] = yaml.safe_load(value)
if os.environ.get("FAKE_DVC_SWAP") == settings["natt"]:  # another run's params, as when two runs race
    params["natt"] = 16
Path("params.yaml").write_text(yaml.safe_dump(params))
if os.environ.get("FAKE_DVC_FAIL") == settings["natt"]:
    sys.exit(1)
Path("log").open("a").write(sys.argv[4] + (" forced" if forced else "") + "\\n")
Path("cpus").open("a").write(" ".join(map(str, sorted(os.sched_getaffinity(0)))) + "\\n")
Path("metrics").mkdir(exist_ok=True)
Path("models").mkdir(exist_ok=True)
live = Path("dvclive/plots/metrics")
live.mkdir(parents=True, exist_ok=True)
natt = int(settings["natt"])
top1 = {{"val_top1": [10.0, 20.0 + natt], "test_top1": [11.0, 19.0 + natt]}}
for metric, values in top1.items():
    lines = "".join(f"{{i}}\\t{{v}}\\n" for i, v in enumerate(values))
    (live / f"{{metric}}.tsv").write_text("step\\t" + metric + "\\n" + lines)
version = inputs.code_version("eval")
metrics = {{"top1": 18.0 + natt, "top5": 40.0 + natt, "full_mnist": True, "code_version": version}}
metrics["top1_by_digit_count"] = {{"0": {{"videos": 1, "top1": 100.0}}}}
Path("metrics/eval.json").write_text(json.dumps(metrics))
info = {{"best_epoch": 2, "best_test_top1_any_epoch": 19.0 + natt, "best_test_epoch": 2, "epochs": 2}}
info.update(train_minutes=0.1, best_val_top1=20.0 + natt)
Path("models/attention_cluster.json").write_text(json.dumps(info))
Path("metrics/feature.json").write_text(json.dumps({{"noisy_test_top1": 98.5}}))
"""


@pytest.fixture
def scratch(tmp_path):
    """A git repository with an eval stage, the published table, a stand-in `dvc` on PATH."""
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin/dvc"
    fake.write_text(FAKE_DVC.format(python=sys.executable))
    fake.chmod(0o755)
    (tmp_path / "eval.py").write_text("# the eval stage's code\n")
    (tmp_path / "dvc.yaml").write_text(json.dumps({"stages": {"eval": {"cmd": "python eval.py", "deps": ["eval.py"]}}}))
    (tmp_path / "pub.csv").write_text(PUBLISHED.to_csv(index=False))
    (tmp_path / "params.yaml").write_text("natt: 1\n")
    (tmp_path / "README.md").write_text(f"# A\n{sweep.README_START}\nold\n{sweep.README_END}\nB\n")
    (tmp_path / "mnist").mkdir()
    for name in mnist.NAMES:  # present, as --mnist-folder needs; the stand-in dvc never reads them
        (tmp_path / "mnist" / name).write_bytes(b"")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    for cmd in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "start"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True)
    return tmp_path, env


def sweep_cli(scratch, *args, **env):
    folder, base = scratch
    published = ["--published", "pub.csv"] if args[0] in ("run", "gather") else []  # only they read it
    cmd = [sys.executable, str(ROOT / "scripts/sweep.py"), *published, *args]
    return subprocess.run(cmd, cwd=folder, env=dict(base, **env), capture_output=True, text=True)


def test_run_commits_each_row_and_continues_where_it_stopped(scratch):
    folder, _ = scratch
    failed = sweep_cli(scratch, "run", "--mnist-folder", str(folder / "mnist"), "--commit", FAKE_DVC_FAIL="8")
    assert failed.returncode == 1 and "fc1-natt8: dvc exp run failed" in failed.stderr
    ok = sweep_cli(scratch, "run", "--mnist-folder", str(folder / "mnist"), "--commit")
    assert ok.returncode == 0, ok.stderr
    assert (folder / "log").read_text().split() == ["fc1-natt8", "fc2-natt8"]  # resumable: no --force
    assert (folder / "removed").read_text().split() == ["fc1-natt8", "fc1-natt8", "fc2-natt8"]
    results = pd.read_csv(folder / "metrics/results.csv")
    assert list(results.ours_val_selected) == [26.0, 26.0] and list(results.ours_best_on_test) == [27.0, 27.0]
    curves = pd.read_csv(folder / "metrics/results_curves.csv")
    assert list(curves.columns) == ["row", "epoch", "val_top1", "test_top1"] and len(curves) == 4
    assert (folder / "plots/results_curves.png").read_bytes()[:4] == b"\x89PNG"
    readme = (folder / "README.md").read_text()
    assert readme.startswith(f"# A\n{sweep.README_START}\n2 of 16 published rows") and readme.endswith("B\n")
    assert "| 1 | 8 | 0.0001 | 0 | 80.5 / 65 | 26 | 27 | 2 (stopped early) |" in readme and "old" not in readme
    log = subprocess.run(["git", "log", "--format=%s"], cwd=folder, capture_output=True, text=True).stdout.splitlines()
    assert log[:2] == [
        "sweep fc2-natt8: val-selected 26.00 %, best on test 27.00 % (published 76.4 / 81.6), 2 epochs",
        "sweep fc1-natt8: val-selected 26.00 %, best on test 27.00 % (published 80.5 / 65.0), 2 epochs",
    ]
    again = sweep_cli(scratch, "run", "--mnist-folder", str(folder / "mnist"))
    assert again.returncode == 0 and again.stdout.count("done with this code") == 2
    assert (folder / "log").read_text().split() == ["fc1-natt8", "fc2-natt8"]  # nothing trained again
    (folder / "eval.py").write_text("# other code\n")
    rerun = sweep_cli(scratch, "run", "--mnist-folder", str(folder / "mnist"), "--rows", "2/8")
    assert rerun.returncode == 0 and (folder / "log").read_text().split()[-1] == "fc2-natt8"
    assert (
        list(pd.read_csv(folder / "metrics/results.csv").natt) == [8]
        and "fc1" not in (folder / "metrics/results.md").read_text()
    )
    patience = sweep_cli(scratch, "run", "--mnist-folder", str(folder / "mnist"), "--rows", "2/8", "--patience", "5")
    assert patience.returncode == 0 and (folder / "log").read_text().split().count("fc2-natt8") == 3
    assert sweep_cli(scratch, "table").returncode == 0


def one_line(result, text):
    """The command stopped with exit status 1 and one line on stderr, containing ``text``."""
    lines = result.stderr.strip().splitlines()
    return result.returncode == 1 and len(lines) == 1 and text in lines[0]


def test_bad_arguments_are_one_line(scratch):
    folder, _ = scratch
    missing = sweep_cli(scratch, "run", "--mnist-folder", str(folder / "nowhere"))
    assert missing.returncode == 1 and missing.stderr.strip().endswith("not a folder (expected the four MNIST files)")
    bad = sweep_cli(scratch, "run", "--mnist-folder", str(folder / "mnist"), "--patience", "0")
    assert bad.returncode == 1 and "--patience 0: expected an integer >= 1" in bad.stderr
    empty = sweep_cli(scratch, "best", "--mnist-folder", "")  # e.g. an unset "$MNIST": not the current folder
    assert one_line(empty, "--mnist-folder '': not a folder"), empty.stderr
    a_file = sweep_cli(scratch, "best", "--mnist-folder", str(folder / "README.md"))
    assert one_line(a_file, "README.md': not a folder"), a_file.stderr
    no_files = sweep_cli(scratch, "run", "--mnist-folder", str(folder / "bin"))  # before any git checkout or dvc
    assert one_line(no_files, "bin: missing train-images-idx3-ubyte (or train-images-idx3-ubyte.gz)")
    (folder / "garbage.csv").write_text('fc,"natt\n')
    (folder / "header.csv").write_text(",".join(PUBLISHED.columns) + "\n")
    cases = [("garbage.csv", "garbage.csv: not a valid CSV file"), ("bin", "bin: not a valid CSV")]
    for published, text in cases + [("header.csv", "header.csv: no rows (expected published rows under the header)")]:
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts/sweep.py"), "--published", published, "run"]
            + ["--mnist-folder", str(folder / "mnist")],
            cwd=folder, env=scratch[1], capture_output=True, text=True,
        )  # fmt: skip
        assert one_line(result, text), result.stderr
    empty = subprocess.run(
        [sys.executable, str(ROOT / "scripts/sweep.py"), "--published", "", "gather", "."],
        cwd=folder, env=scratch[1], capture_output=True, text=True,
    )  # fmt: skip
    assert empty.returncode == 2 and "--published '': expected the path of a published table CSV" in empty.stderr
    for command, *more in (["table"], ["best", "--mnist-folder", "mnist"]):  # neither reads a published table
        ignored = subprocess.run(
            [sys.executable, str(ROOT / "scripts/sweep.py"), "--published", "pub.csv", command, *more],
            cwd=folder, env=scratch[1], capture_output=True, text=True,
        )  # fmt: skip
        assert ignored.returncode == 2
        assert f"--published is read by run and gather only, not by {command}" in ignored.stderr.splitlines()[-1]
    assert not (folder / "log").exists() and not (folder / "removed").exists()
    shutil.rmtree(folder / ".git")
    outside = sweep_cli(scratch, "best", "--mnist-folder", str(folder / "mnist"))
    assert one_line(outside, "git show: "), outside.stderr
    assert "run scripts/sweep.py in the project's git checkout" in outside.stderr


def test_damaged_tables_and_readme_stop_with_one_line_and_change_nothing(scratch):
    folder, _ = scratch
    assert sweep_cli(scratch, "run", "--mnist-folder", str(folder / "mnist"), "--rows", "1/8").returncode == 0
    assert sweep_cli(scratch, "best", "--mnist-folder", str(folder / "mnist")).returncode == 0
    names = ["metrics/results.csv", "metrics/results_curves.csv", "metrics/best_recipe.json", "README.md"]
    good = {name: (folder / name).read_text() for name in names}
    columns = ",".join(c for c in sweep.COLUMNS if c != "host")
    broken_readme = f"# A\n{sweep.README_END}\nold\n{sweep.README_START}\nB\n"
    cases = [
        ("metrics/results.csv", "", "metrics/results.csv: not a valid CSV file (No columns to parse from file)"),
        ("metrics/results.csv", 'fc,"natt\n', "metrics/results.csv: not a valid CSV file"),
        ("metrics/results.csv", columns + "\n", "metrics/results.csv: missing column(s) host"),
        ("metrics/results_curves.csv", "a,b\n", "metrics/results_curves.csv: missing column(s) row, epoch"),
        (
            "metrics/results.csv",
            good["metrics/results.csv"].replace(",80.5,", ",abc,"),
            "results.csv: line 2, column published_ascend: expected a number in 0..100, got 'abc'; restore it: git",
        ),
        (
            "metrics/results.csv",
            good["metrics/results.csv"].replace("\n1,8,", "\n3,8,"),
            "results.csv: line 2, column fc: expected 1 or 2, got 3",
        ),
        (
            "metrics/results.csv",
            good["metrics/results.csv"].replace("\n1,8,", "\n1,3,"),
            "results.csv: row(s) 1/3 are not among the 16 published rows (1/8 2/8 1/1",
        ),
        (
            "metrics/results_curves.csv",
            good["metrics/results_curves.csv"].replace(",10.0,", ",ten,", 1),
            "results_curves.csv: line 2, column val_top1: expected a number in 0..100, got 'ten'",
        ),
        ("metrics/best_recipe.json", "{bad", "metrics/best_recipe.json: not valid JSON"),
        ("metrics/best_recipe.json", "[]", "metrics/best_recipe.json: expected a JSON object with settings"),
        ("metrics/best_recipe.json", '{"settings": {}, "top1": "92"}', "best_recipe.json: expected a JSON object"),
        ("README.md", "# A\n", "README.md: expected the results section once"),
        ("README.md", broken_readme, "found 1 start and 1 end marker(s), end first"),
    ]
    for name, text, error in cases:
        (folder / name).write_text(text)
        result = sweep_cli(scratch, "table")
        assert one_line(result, error), (name, text, result.stderr)
        (folder / name).write_text(good[name])
        assert {n: (folder / n).read_text() for n in names} == good, (name, text)  # nothing half-written
    (folder / "plots/results_curves.png").unlink()
    (folder / "plots/results_curves.png").mkdir()  # cannot be written: the others are left as they were
    blocked = sweep_cli(scratch, "table")
    assert one_line(blocked, "results_curves.png there (a folder is in its place); no file was changed")
    assert {n: (folder / n).read_text() for n in names} == good and not list(folder.glob("metrics/.*tmp*"))
    (folder / "plots/results_curves.png").rmdir()
    (folder / "plots").rmdir()
    (folder / "plots").write_text("")  # a file where the picture's folder goes: refused before the pipeline runs
    blocked = sweep_cli(scratch, "best", "--mnist-folder", str(folder / "mnist"))
    assert one_line(blocked, "plots: cannot write plots/results_curves.png there (a file is in its place)")
    assert (folder / "log").read_text().split() == ["fc1-natt8", "best", "forced"]  # only the best run above
    (folder / "plots").unlink()
    (folder / "README.md").write_text(broken_readme)
    run = sweep_cli(scratch, "run", "--mnist-folder", str(folder / "mnist"), "--rows", "2/8")
    assert one_line(run, "README.md: expected the results section once") and "fc2" not in (folder / "log").read_text()
    (folder / "README.md").write_text(good["README.md"])
    (folder / "metrics/results.csv").write_text(good["metrics/results.csv"].replace(",80.5,", ",abc,"))
    run = sweep_cli(scratch, "run", "--mnist-folder", str(folder / "mnist"), "--rows", "2/8")
    assert one_line(run, "column published_ascend: expected a number") and "fc2" not in (folder / "log").read_text()
    (folder / "metrics/results.csv").unlink()  # e.g. run from another folder: no empty table written
    missing = sweep_cli(scratch, "table")
    assert one_line(missing, "metrics/results.csv: file not found (run scripts/sweep.py from the repository root")
    assert not (folder / "metrics/results.csv").exists()


def test_a_damaged_published_table_stops_before_any_row(scratch):
    folder, _ = scratch
    good = (folder / "pub.csv").read_text()  # 1/8 then 2/8
    cases = [
        (good.replace(",81.6", ",unknown"), "bad.csv: line 3, column gpu_top1_pct: expected a number in 0..100"),
        (good.replace(",200,", ",0,", 1), "bad.csv: line 2, column epochs: expected an integer >= 1, got 0"),
        (good.replace(",200,", ",200.5,", 1), "bad.csv: line 2, column epochs: expected an integer >= 1, got 200.5"),
        (good.replace("\n1,8,", "\n3,8,"), "bad.csv: line 2, column fc: expected 1 or 2, got 3"),
        (good + good.splitlines()[2] + "\n", "bad.csv: row(s) 2/8 appear twice"),
        (good.replace("\n1,8,", "\n1,3,"), "bad.csv: row(s) 1/3 are not among the 16 published rows"),
    ]
    cmd = [sys.executable, str(ROOT / "scripts/sweep.py"), "--published", "bad.csv", "run", "--mnist-folder", "mnist"]
    for text, error in cases:
        (folder / "bad.csv").write_text(text)
        result = subprocess.run(cmd, cwd=folder, env=scratch[1], capture_output=True, text=True)
        assert one_line(result, error), (text, result.stderr)
        assert not (folder / "log").exists() and not (folder / "metrics").exists()
    (folder / "bad.csv").write_text(good.replace("\n2,8,", "\n2.0,8,"))  # a whole number written as a float
    assert subprocess.run(cmd, cwd=folder, env=scratch[1], capture_output=True).returncode == 0
    assert (folder / "log").read_text().split() == ["fc1-natt8", "fc2-natt8"]


def test_readme_markers_must_be_there_once_and_in_order():
    block = f"{sweep.README_START}\nnew\n{sweep.README_END}"
    assert sweep.update_readme(f"a\n{sweep.README_START}\nold\n{sweep.README_END}\nb", block) == f"a\n{block}\nb"
    for text, found in [
        ("a\n", "found 0 start and 0 end marker(s)"),
        (f"a\n{sweep.README_START}\nold\n", "found 1 start and 0 end marker(s)"),
        (f"a\nold\n{sweep.README_END}\n", "found 0 start and 1 end marker(s)"),
        (f"{sweep.README_END}\n{sweep.README_START}\n", "found 1 start and 1 end marker(s), end first"),
        (f"{block}\n{block}\n", "found 2 start and 2 end marker(s)"),
    ]:
        with pytest.raises(UserError, match=f"^README.md: expected the results section once.*; {re.escape(found)} \\("):
            sweep.update_readme(text, block)


def test_best_recipe_reruns_every_stage_and_records_the_pipeline(scratch):
    argv = sweep.recipe_argv("/data/mnist")
    assert argv[:6] == ["dvc", "exp", "run", "-n", "best", "--force"]
    settings = dict(a.split("=", 1) for a in argv[7::2])
    assert settings == {
        **{k: str(v) for k, v in sweep.RECIPE.items()},
        "mnist.source": "folder",
        "mnist.folder": "/data/mnist",
    }
    folder, _ = scratch
    (folder / "params.yaml").write_text("natt: 99\n")  # an uncommitted edit: the stand-in dvc asserts it is gone
    result = sweep_cli(scratch, "best", "--mnist-folder", str(folder / "mnist"), "--commit")
    assert result.returncode == 0, result.stderr
    assert (folder / "log").read_text().split() == ["best", "forced"]
    natt = sweep.RECIPE["natt"]
    record = json.loads((folder / "metrics/best_recipe.json").read_text())
    assert record["settings"] == sweep.RECIPE and record["top1"] == 18.0 + natt and record["noisy_test_top1"] == 98.5
    assert record["best_val_top1"] == 20.0 + natt and 0 <= record["pipeline_minutes"] < 5
    log = subprocess.run(["git", "log", "--format=%s"], cwd=folder, capture_output=True, text=True).stdout
    assert log.startswith(f"best recipe: test top-1 {18.0 + natt:.2f} % in ")
    assert (
        "Our best recipe (`metrics/best_recipe.json`, `-S flash.train_per_label=200 -S feature.epochs="
        in (folder / "README.md").read_text()
    )
    assert "README.md" in subprocess.run(["git", "show", "--stat"], cwd=folder, capture_output=True, text=True).stdout


def test_readme_shows_the_committed_results():
    """README.md's results block is what scripts/sweep.py makes from the committed tables."""
    results = pd.read_csv(ROOT / "metrics/results.csv", dtype={"code_version": str})
    best = ROOT / "metrics/best_recipe.json"
    block = sweep.readme_block(results, json.loads(best.read_text()) if best.is_file() else None)
    assert block in (ROOT / "README.md").read_text()


def test_readme_block_says_whether_the_table_is_complete():
    table = sweep.read_table(ROOT / "metrics/results.csv", sweep.KINDS)
    assert len(table) == 16 and "\nAll 16 published rows (`metrics/results.md`" in sweep.readme_block(table)
    assert "\n15 of 16 published rows so far (" in sweep.readme_block(table.iloc[:15])


def test_two_sweeps_in_two_clones_are_gathered_into_one_table(scratch):
    """Two clones each run rows of their own, pinned to a CPU each; `gather` takes both into the
    table of a third checkout, rows in sweep.ORDER, and leaves out rows of other code and a trial
    row of a shorter budget (a third clone)."""
    folder, env = scratch
    cpu = max(os.sched_getaffinity(0))
    clones = [folder.parent / "clone_a", folder.parent / "clone_b", folder.parent / "trial", folder.parent / "again"]
    for clone, row, extra in zip(clones, ("2/8", "1/8", "2/8", "1/8"), ([], [], ["--epochs", "1"], [])):
        subprocess.run(["git", "clone", "-q", str(folder), str(clone)], env=env, check=True)
        cmd = [sys.executable, str(ROOT / "scripts/sweep.py"), "--published", "pub.csv", "run", "--mnist-folder",
               str(folder / "mnist"), "--rows", row, "--commit", "--cpus", str(cpu), *extra]  # fmt: skip
        result = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert (clone / "cpus").read_text() == f"{cpu}\n"  # dvc ran on that CPU alone
    conflict = sweep_cli(scratch, "gather", *map(str, clones))
    assert one_line(conflict, f"fc1-natt8: in both {clones[1]} and {clones[3]}; gather each row from one checkout")
    assert not (folder / "metrics").exists()
    gathered = sweep_cli(scratch, "gather", *map(str, clones[:3]), str(clones[1]))  # twice: counted once
    assert gathered.returncode == 0 and "2 row(s) of code" in gathered.stdout, gathered.stderr
    trial = f"fc2-natt8 of {clones[2]} ran with budget 1 and patience 20, not 200 and 20: not taken"
    assert trial in gathered.stdout
    results = pd.read_csv(folder / "metrics/results.csv")
    assert list(zip(results.fc, results.natt)) == [(1, 8), (2, 8)]  # sweep.ORDER, not the order gathered
    assert list(results.budget) == [200, 200]
    curves = pd.read_csv(folder / "metrics/results_curves.csv")
    assert list(curves.row) == ["fc1-natt8", "fc1-natt8", "fc2-natt8", "fc2-natt8"]
    assert "2 of 16 published rows" in (folder / "README.md").read_text()
    other_patience = sweep_cli(scratch, "gather", str(clones[0]), "--patience", "5")
    assert "fc2-natt8 of" in other_patience.stdout and "0 row(s) of code" in other_patience.stdout
    PUBLISHED[PUBLISHED.fc == 2].to_csv(folder / "one.csv", index=False)  # a published table without 1/8
    cmd = [sys.executable, str(ROOT / "scripts/sweep.py"), "--published", "one.csv", "gather", *map(str, clones[:2])]
    partial = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    assert partial.returncode == 0 and f"fc1-natt8 of {clones[1]} is not a row of one.csv: not taken" in partial.stdout
    (folder / "eval.py").write_text("# other code\n")  # the clones' rows are of other code now
    again = sweep_cli(scratch, "gather", *map(str, clones))
    assert again.returncode == 0 and "0 row(s) of code" in again.stdout
    assert len(pd.read_csv(folder / "metrics/results.csv")) == 0
    nowhere = sweep_cli(scratch, "gather", str(folder / "mnist"))
    assert one_line(nowhere, "mnist: no metrics/results.csv there"), nowhere.stderr


def test_a_row_twice_in_a_table_is_refused(scratch):
    folder, _ = scratch
    fc1, fc2 = PUBLISHED.itertuples(index=False)
    table = sweep.merge(sweep.merge(pd.DataFrame(columns=sweep.COLUMNS), record(fc1)), record(fc2))
    (folder / "metrics").mkdir()
    pd.concat([table, table.iloc[[1]]]).to_csv(folder / "metrics/results.csv", index=False)
    curves = pd.DataFrame(columns=["row", "epoch", "val_top1", "test_top1"])
    curves.to_csv(folder / "metrics/results_curves.csv", index=False)
    assert one_line(sweep_cli(scratch, "table"), "metrics/results.csv: row(s) 2/8 appear twice")


def test_a_row_run_with_other_params_is_not_tabulated(scratch):
    folder, _ = scratch
    swapped = sweep_cli(scratch, "run", "--mnist-folder", str(folder / "mnist"), "--rows", "2/8", FAKE_DVC_SWAP="8")
    assert one_line(swapped, "fc2-natt8: it ran with natt=16, not 8 (another dvc exp run in a worktree"), swapped.stderr
    assert not (folder / "metrics/results.csv").exists()


def test_unapplied_settings_are_named():
    argv = ["dvc", "exp", "run", "-n", "x", "-S", "lr=0.0001", "-S", "report_test=true", "-S", "mnist.folder=/m"]
    assert sweep.unapplied(argv, {"lr": 1e-4, "report_test": True, "mnist": {"folder": "/m"}}) == []
    params = {"lr": 5e-4, "report_test": True, "mnist": {"source": "folder"}}
    assert sweep.unapplied(argv, params) == ["lr=0.0005, not 0.0001", "mnist.folder=None, not /m"]
    exponent = ["-S", "weight_decay=1e-05", "-S", "lr=1e-4", "-S", "fc=1"]
    assert sweep.unapplied(exponent, {"weight_decay": 1e-5, "lr": "1e-4", "fc": True}) == ["fc=True, not 1"]
    assert sweep.unapplied(exponent, {"weight_decay": 1e-4, "lr": 1e-4, "fc": 1}) == ["weight_decay=0.0001, not 1e-05"]


def test_cpus_must_be_usable(scratch):
    folder, _ = scratch
    bad = sweep_cli(scratch, "run", "--mnist-folder", str(folder / "mnist"), "--cpus", "4096")
    assert one_line(bad, "--cpus 4096: not a CPU this process may use"), bad.stderr
    assert not (folder / "log").exists()


def test_rows_start_from_the_committed_params_when_git_misses_an_edit(scratch):
    """A failed `dvc exp run` can leave git's index holding HEAD's hash with the edited params.yaml's
    size and time, so that `git checkout HEAD -- params.yaml` keeps the edit (seen with DVC 3.67);
    each row must still start from the committed text."""
    folder, env = scratch
    params, past = folder / "params.yaml", time.time() - 100  # older than git's index: not "racily clean"
    os.utime(params, (past, past))
    for cmd in (
        ["config", "core.trustctime", "false"],
        ["config", "core.checkStat", "minimal"],
        ["update-index", "--refresh"],
    ):
        subprocess.run(["git", *cmd], cwd=folder, env=env, check=True)
    params.write_text("natt: 9\n")  # the committed file's size and time: git cannot see the edit
    os.utime(params, (past, past))
    status = subprocess.run(["git", "status", "--porcelain"], cwd=folder, env=env, capture_output=True, text=True)
    assert "params.yaml" not in status.stdout
    result = sweep_cli(scratch, "best", "--mnist-folder", str(folder / "mnist"))  # the stand-in dvc asserts natt: 1
    assert result.returncode == 0, result.stderr
