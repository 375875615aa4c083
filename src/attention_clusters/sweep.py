"""The published table, row by row: the experiment of each row and the results table.

Each published row (``reference/published_results.csv``: fc, natt, lr, weight_decay, the
published Ascend and GPU top-1) is trained by ``dvc exp run`` with its own settings (batch 64,
Adam, constant lr, summed loss: the defaults of params.yaml, as the ModelZoo), on full MNIST,
for at most the published 200 epochs, stopping early after ``patience`` epochs without a better
validation top-1, and with ``report_test`` so the test top-1 of every epoch is logged too.
Two figures per row: **ours (val-selected)**, the test top-1 of the epoch chosen on validation
(our protocol, SPEC 8); and **best on test**, the highest test top-1 of any epoch (the
ModelZoo's protocol: its train.py evaluates the test split every epoch and keeps the best).

:data:`ORDER` runs the most informative rows first: fc=1 natt=8 (the ModelZoo's headline and
Ascend 310 figure), fc=2 natt=8 (the published Ascend and GPU figures disagree most among the
fc=2 rows with weight decay), the default natt=1, the other lr 1e-4 rows, then the natt >= 16
rows from the cheapest up.
"""

import csv
import io
import math

import pandas as pd
import yaml

from .errors import UserError

PUBLISHED = "reference/published_results.csv"
ORDER = (
    "1/8", "2/8", "1/1", "2/1", "1/2", "2/2", "1/4", "2/4",
    "1/16", "2/16", "1/32", "2/32", "1/64", "2/64", "1/128", "2/128",
)  # fmt: skip
# Our best recipe on full MNIST so far (docs/results.md, "Best recipe"): settings beyond the
# ModelZoo's (training.md, "Parameters in detail") chosen for test top-1 with the whole pipeline in
# <= 15 minutes on a 2-core CPU.
RECIPE_NAME = "best"
RECIPE = {
    "flash.train_per_label": 200,  # twice the training videos: fewer epochs reach a better val top-1
    "feature.epochs": 5,
    "fc": 2,
    "natt": 64,
    "lr_schedule": "cosine",
    "warmup_epochs": 1,
    "epochs": 10,
    "batch_size": 128,  # 1.2-1.35x faster than batch 64 at the same val top-1 ...
    "lr": 0.002,  # ... with the lr scaled with the batch
}
COLUMNS = [
    "fc", "natt", "lr", "weight_decay", "published_ascend", "published_gpu", "ours_val_selected",
    "ours_best_on_test", "best_epoch", "best_test_epoch", "budget", "patience", "epochs_run", "stopped_early",
    "train_minutes", "full_mnist", "host", "code_version",
]  # fmt: skip
# What each column of the tables holds, checked when a table is read (:func:`checked`): "count"
# an integer >= 1, "epoch" an integer >= 0, "number" a finite number >= 0, "percent" one in 0..100
# ("percent?" may be blank), "bool" True or False, "text" anything.
PUBLISHED_KINDS = {
    "fc": "fc", "natt": "count", "epochs": "count", "lr": "number", "weight_decay": "number",
    "ascend_top1_pct": "percent", "gpu_top1_pct": "percent",
}  # fmt: skip
KINDS = {
    "fc": "fc", "natt": "count", "lr": "number", "weight_decay": "number", "published_ascend": "percent",
    "published_gpu": "percent", "ours_val_selected": "percent", "ours_best_on_test": "percent",
    "best_epoch": "epoch", "best_test_epoch": "epoch", "budget": "count", "patience": "count",
    "epochs_run": "count", "stopped_early": "bool", "train_minutes": "number", "full_mnist": "bool",
    "host": "text", "code_version": "text",
}  # fmt: skip
CURVE_KINDS = {"row": "text", "epoch": "count", "val_top1": "percent", "test_top1": "percent?"}
_DTYPES = {"fc": "int64", "count": "int64", "epoch": "int64", "bool": "bool", "text": "object"}
_EXPECTED = {
    "fc": "1 or 2",
    "count": "an integer >= 1",
    "epoch": "an integer >= 0",
    "number": "a number >= 0",
    "percent": "a number in 0..100",
    "percent?": "a number in 0..100 or nothing",
    "bool": "True or False",
    "text": "text",
}


def published_rows(path=PUBLISHED):
    """The published table: DataFrame with the columns of :data:`PUBLISHED_KINDS`, one row per fc/natt,
    each cell of the kind :data:`PUBLISHED_KINDS` gives it (fc and natt int, lr float, ...).

    Raises:
        UserError: naming ``path``: see :func:`read_table`; no rows; a row twice or not among the 16
            of :data:`ORDER`.
    """
    table = read_table(path, PUBLISHED_KINDS)
    if table.empty:
        raise UserError(f"{path}: no rows (expected published rows under the header)")
    ordered(table, where=path)  # each of the 16 rows at most once
    return table


def read_table(path, kinds, hint=""):
    """The CSV at ``path`` with each column of ``kinds`` (column -> kind, :data:`_EXPECTED`) checked
    and converted cell by cell (:func:`checked`); other columns as pandas reads them.

    ``hint``: what to do about a damaged file (e.g. how to restore it), added to every error.

    Raises:
        UserError: naming ``path``: missing, not a CSV file, lacking a column of ``kinds``, or a
            cell not of its column's kind.
    """
    suffix = f"; {hint}" if hint else ""
    try:
        table = pd.read_csv(path, dtype={column: str for column, kind in kinds.items() if kind == "text"})
    except FileNotFoundError:
        raise UserError(f"{path}: file not found{f' ({hint})' if hint else ''}") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"{path}: not a valid CSV file ({str(err).splitlines()[0]}){suffix}") from None
    missing = [column for column in kinds if column not in table.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}{suffix}")
    return checked(table, kinds, path, suffix)


def _cell(value, kind):
    """``value`` (a cell as pandas read it) as the Python value of ``kind`` (:data:`_EXPECTED`), or
    None when it is not one."""
    if kind == "text":
        return None if isinstance(value, float) and math.isnan(value) else str(value)
    if kind == "bool":
        text = str(value).strip().lower()
        return {"true": True, "false": False}.get(text)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if kind == "percent?" and math.isnan(number):
        return number
    if not math.isfinite(number) or number < 0 or (kind.startswith("percent") and number > 100):
        return None
    if kind in ("fc", "count", "epoch"):
        if number != int(number) or (kind == "fc" and number not in (1, 2)) or (kind == "count" and number < 1):
            return None
        return int(number)
    return number


def checked(table, kinds, where, hint=""):
    """``table`` with each column of ``kinds`` (column -> kind, :data:`_EXPECTED`) converted to its
    Python values (int, float, bool, str).

    Raises:
        UserError: naming ``where``, the line and the column of the first cell that is not of its
            kind, then ``hint``.
    """
    table = table.copy()
    for column, kind in kinds.items():
        values = [_cell(v, kind) for v in table[column]]
        for line, (raw, value) in enumerate(zip(table[column], values), start=2):
            if value is None:
                raise UserError(f"{where}: line {line}, column {column}: expected {_EXPECTED[kind]}, got {raw!r}{hint}")
        table[column] = pd.Series(values, index=table.index, dtype=_DTYPES.get(kind, "float64"))
    return table


def name(fc, natt):
    """The row's name, e.g. ``fc1-natt8`` (also its experiment's name)."""
    return f"fc{fc}-natt{natt}"


def select(table, rows=()):
    """Rows of ``table`` named ``"fc/natt"`` (e.g. ``["2/8", "1/32"]``), in :data:`ORDER`; all when empty.

    Raises:
        UserError: a name is malformed or not in the table.
    """
    wanted = list(rows) or [f"{r.fc}/{r.natt}" for r in table.itertuples()]
    picked = []
    for text in sorted(wanted, key=lambda t: ORDER.index(t) if t in ORDER else len(ORDER)):
        try:
            fc, natt = (int(part) for part in text.split("/"))
        except ValueError:
            raise UserError(f"row '{text}': expected fc/natt, e.g. 2/8") from None
        match = table[(table.fc == fc) & (table.natt == natt)]
        if match.empty:
            raise UserError(f"row '{text}': no published row with fc={fc}, natt={natt}")
        picked.append(match)
    return pd.concat(picked, ignore_index=True)


def _exp_run(experiment, settings, mnist_folder, force=False):
    """``dvc exp run -n experiment [--force] -S key=value ...`` on the MNIST files in ``mnist_folder``."""
    argv = ["dvc", "exp", "run", "-n", experiment] + (["--force"] if force else [])
    for key, value in {**settings, "mnist.source": "folder", "mnist.folder": mnist_folder}.items():
        argv += ["-S", f"{key}={value}"]
    return argv


def unapplied(argv, params):
    """The ``-S key=value`` settings of ``argv`` that ``params`` (the parsed params.yaml after the
    run; dotted keys are nested) does not hold, as ``"key=found, not value"`` strings.

    ``dvc exp run`` keeps the experiment it is running in git refs (``refs/exps/exec``) that every
    worktree of a repository shares: two runs at once in two worktrees of one repository can swap
    their params, so each row checks that it ran with its own.
    """
    wrong = []
    for key, value in (a.split("=", 1) for flag, a in zip(argv, argv[1:]) if flag == "-S"):
        found = params
        for part in key.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        if not _same_setting(found, value):
            wrong.append(f"{key}={found}, not {value}")
    return wrong


def _same_setting(found, value):
    """Whether params.yaml's ``found`` is the ``-S`` text ``value``: as YAML reads it, or as a number
    (YAML 1.1 reads "1e-05" as text, while params.yaml may hold it as the float 1e-05); a bool
    equals only a bool."""
    expected = yaml.safe_load(value)
    if isinstance(found, bool) or isinstance(expected, bool):
        return found is expected
    if found == expected:
        return True
    try:
        return isinstance(found, (int, float)) and float(value) == found
    except ValueError:
        return False


def experiment_argv(row, mnist_folder, patience):
    """``dvc exp run`` (in the workspace, so the train stage can resume) of one published row.

    Args:
        row: a row of :func:`published_rows`; mnist_folder: the folder of the four MNIST files;
        patience: epochs without a better val top-1 before stopping (>= 1).
    """
    settings = {
        "fc": row.fc,
        "natt": row.natt,
        "lr": f"{row.lr:g}",
        "weight_decay": f"{row.weight_decay:g}",
        "epochs": int(row.epochs),
        "patience": patience,
        "report_test": "true",
    }
    return _exp_run(name(row.fc, row.natt), settings, mnist_folder)


def recipe_argv(mnist_folder):
    """``dvc exp run --force -n best`` of :data:`RECIPE`: every stage reruns, so its wall time is
    the whole pipeline's, features included."""
    return _exp_run(RECIPE_NAME, RECIPE, mnist_folder, force=True)


def recipe_result(eval_metrics, model_info, feature_metrics, pipeline_minutes, host):
    """The best recipe's record (``metrics/best_recipe.json``): its settings, the test top-1 and
    top-5 of the epoch chosen on validation, the wall-clock minutes of the whole pipeline, the
    training minutes (without validation), the extractor's Noisy-MNIST test top-1, top-1 by the
    number of digits in a video, the host and the code version."""
    return {
        "settings": dict(RECIPE),
        "top1": eval_metrics["top1"],
        "top5": eval_metrics["top5"],
        "best_epoch": model_info["best_epoch"],
        "epochs": model_info["epochs"],
        "best_val_top1": model_info["best_val_top1"],
        "pipeline_minutes": round(pipeline_minutes, 2),
        "train_minutes": model_info["train_minutes"],
        "noisy_test_top1": feature_metrics["noisy_test_top1"],
        "top1_by_digit_count": eval_metrics["top1_by_digit_count"],
        "full_mnist": eval_metrics["full_mnist"],
        "host": host,
        "code_version": eval_metrics["code_version"],
    }


def read_curve(tsv):
    """``{epoch: value}`` of one DVCLive metric file (``step`` is the epoch - 1)."""
    with open(tsv) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    metric = [key for key in rows[0] if key != "step"][0] if rows else None
    return {int(r["step"]) + 1: float(r[metric]) for r in rows}


def result(row, eval_metrics, model_info, budget, patience, host):
    """One row of the results table (:data:`COLUMNS`) from the run's metrics/eval.json and
    models/attention_cluster.json (with ``best_test_top1_any_epoch``, ``report_test``).

    Args:
        budget: the epochs allowed (the published 200); patience: as run; host: the CPU, in words.
    """
    return {
        "fc": int(row.fc),
        "natt": int(row.natt),
        "lr": float(row.lr),
        "weight_decay": float(row.weight_decay),
        "published_ascend": float(row.ascend_top1_pct),
        "published_gpu": float(row.gpu_top1_pct),
        "ours_val_selected": eval_metrics["top1"],
        "ours_best_on_test": model_info["best_test_top1_any_epoch"],
        "best_epoch": model_info["best_epoch"],
        "best_test_epoch": model_info["best_test_epoch"],
        "budget": int(budget),
        "patience": int(patience),
        "epochs_run": model_info["epochs"],
        "stopped_early": model_info["epochs"] < budget,
        "train_minutes": model_info["train_minutes"],
        "full_mnist": eval_metrics["full_mnist"],
        "host": host,
        "code_version": eval_metrics["code_version"],
    }


def merge(table, record):
    """``table`` (DataFrame with :data:`COLUMNS`, possibly empty) with ``record`` replacing any
    row of the same fc and natt, rows in :data:`ORDER`."""
    keep = table[~((table.fc == record["fc"]) & (table.natt == record["natt"]))] if len(table) else table
    return ordered(pd.concat([keep, pd.DataFrame([record])], ignore_index=True)[COLUMNS])


def ordered(results, curves=None, where="metrics/results.csv"):
    """``results`` (DataFrame with :data:`COLUMNS`) with its rows in :data:`ORDER`; with ``curves``
    (DataFrame with columns ``row``, ``epoch``, ...) also the curves by row in that order, then epoch.

    Raises:
        UserError: naming ``where``: a row is there twice or is not a published row.
    """
    names = [f"{fc}/{natt}" for fc, natt in zip(results.fc, results.natt)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"{where}: row(s) {', '.join(twice)} appear twice; keep one line of each")
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        raise UserError(f"{where}: row(s) {', '.join(unknown)} are not among the 16 published rows ({' '.join(ORDER)})")
    results = results.iloc[sorted(range(len(names)), key=lambda i: ORDER.index(names[i]))].reset_index(drop=True)
    if curves is None:
        return results
    rank = {name(*n.split("/")): i for i, n in enumerate(ORDER)}
    curves = curves.assign(_rank=curves.row.map(rank)).sort_values(["_rank", "epoch"], kind="stable")
    return results, curves.drop(columns="_rank").reset_index(drop=True)


def markdown(frame):
    """A GitHub markdown table of ``frame`` (empty cells for missing values)."""

    def cell(value):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return f"{value:g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.astype(object).itertuples(index=False)]
    return "\n".join(lines) + "\n"


README_START, README_END = "<!-- results: start (scripts/sweep.py) -->", "<!-- results: end -->"


def readme_block(results, best=None):
    """The README's results section, generated: the published rows that have run (from
    ``metrics/results.csv``) and, when given, the best recipe's record (``metrics/best_recipe.json``).

    Args:
        results: DataFrame with :data:`COLUMNS`; best: dict of :func:`recipe_result` or None.
    """
    short = pd.DataFrame(
        {
            "fc": results.fc,
            "natt": results.natt,
            "lr": results.lr,
            "weight decay": results.weight_decay,
            "published Ascend / GPU": [
                f"{a:g} / {g:g}" for a, g in zip(results.published_ascend, results.published_gpu)
            ],
            "ours, val-selected": results.ours_val_selected,
            "ours, best on test": results.ours_best_on_test,
            "epochs run": [
                f"{n}" + (" (stopped early)" if s else "") for n, s in zip(results.epochs_run, results.stopped_early)
            ],
        }
    )
    lines = [
        README_START,
        (
            f"All {len(ORDER)} published rows"
            if len(results) == len(ORDER)
            else f"{len(results)} of {len(ORDER)} published rows so far"
        )
        + " (`metrics/results.md`, full MNIST, test top-1 %):",
        "",
        markdown(short).rstrip("\n"),
    ]
    if best is not None:
        settings = " ".join(f"-S {key}={value}" for key, value in best["settings"].items())
        lines += [
            "",
            f"Our best recipe (`metrics/best_recipe.json`, `{settings}`): test top-1 {best['top1']:g} % "
            f"(val-selected; top-5 {best['top5']:g} %), the whole pipeline from MNIST files in "
            f"{best['pipeline_minutes']:g} minutes on {best['host']}.",
        ]
    return "\n".join(lines + [README_END])


def update_readme(text, block, where="README.md"):
    """``text`` (README.md) with the part from :data:`README_START` to :data:`README_END` replaced
    by ``block``.

    Raises:
        UserError: naming ``where``, unless ``text`` holds each marker once, the start first.
    """
    counts = [text.count(marker) for marker in (README_START, README_END)]
    start, end = text.find(README_START), text.find(README_END)
    if counts != [1, 1] or end < start:
        found = f"found {counts[0]} start and {counts[1]} end marker(s)" + (", end first" if 0 <= end < start else "")
        raise UserError(
            f"{where}: expected the results section once, between the lines {README_START} and "
            f"{README_END}; {found} (restore them: git checkout HEAD -- {where})"
        )
    return text[:start] + block + text[end + len(README_END) :]


def check_recipe(best, where="metrics/best_recipe.json"):
    """``best``, a record of :func:`recipe_result` as read from ``where``, with what
    :func:`readme_block` shows.

    Raises:
        UserError: ``best`` is not an object with ``settings`` (an object), numeric ``top1``,
            ``top5``, ``pipeline_minutes`` and ``host``.
    """
    numbers = ("top1", "top5", "pipeline_minutes")
    if (
        not isinstance(best, dict)
        or not isinstance(best.get("settings"), dict)
        or not all(isinstance(best.get(key), (int, float)) and not isinstance(best[key], bool) for key in numbers)
        or "host" not in best
    ):
        raise UserError(
            f"{where}: expected a JSON object with settings (an object), {', '.join(numbers)} (numbers) and host "
            f"(restore it: git checkout HEAD -- {where}, or re-make it: python scripts/sweep.py best)"
        )
    return best


def curves_png(curves):
    """Val top-1 (%) by epoch, one line per row: PNG bytes.

    Args:
        curves: DataFrame with columns ``row``, ``epoch``, ``val_top1``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for row, curve in curves.groupby("row", sort=False):
        ax.plot(curve.epoch, curve.val_top1, label=row, linewidth=1.2)
    ax.set(xlabel="epoch", ylabel="val top-1 (%)", title="Published rows on full MNIST: validation top-1 by epoch")
    ax.grid(alpha=0.3)
    if len(curves):
        ax.legend(ncol=2, fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    return png.getvalue()
