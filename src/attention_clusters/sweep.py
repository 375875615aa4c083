"""The published table as DVC experiments: queue its rows, then compare our results with it.

``published_rows`` reads ``reference/published_results.csv`` (columns fc, natt, epochs, lr,
weight_decay, ascend_top1_pct, gpu_top1_pct); ``queue_commands`` turns selected rows into
``dvc exp run --queue`` command lines; ``experiments`` flattens the JSON of
``dvc exp show --json`` (DVC 3) into one record per experiment; ``comparison`` joins the two
into the table written to ``metrics/published_comparison.{md,csv}``.
"""

import json
import math

import pandas as pd

from .errors import UserError

PUBLISHED = "reference/published_results.csv"
KEYS = ("fc", "natt", "lr", "weight_decay")  # what makes an experiment one of the published rows
PUBLISHED_COLUMNS = {"fc", "natt", "epochs", "lr", "weight_decay", "ascend_top1_pct", "gpu_top1_pct"}
OPTIONS = ("optimizer", "lr_schedule", "warmup_epochs", "batch_size")  # shown when they vary
COLUMNS = [
    "fc", "natt", "lr", "weight_decay", *OPTIONS, "published_ascend", "published_gpu", "ours_test_top1",
    "best_epoch", "best_val_top1", "epochs", "train_minutes", "full_mnist", "code_version", "experiment",
]  # fmt: skip


def published_rows(path=PUBLISHED):
    """The published table: DataFrame with the columns of :data:`PUBLISHED_COLUMNS`, one row per fc/natt.

    Raises:
        UserError: the file is missing or lacks a column.
    """
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"{path}: published table not found") from None
    missing = PUBLISHED_COLUMNS - set(table.columns)
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return table


def select(table, rows):
    """Rows of ``table`` named as ``"fc/natt"`` strings (e.g. ``["2/8", "1/32"]``); all when empty.

    Raises:
        UserError: a name is malformed or not in the table.
    """
    if not rows:
        return table
    picked = []
    for name in rows:
        try:
            fc, natt = (int(part) for part in name.split("/"))
        except ValueError:
            raise UserError(f"row '{name}': expected fc/natt, e.g. 2/8") from None
        match = table[(table.fc == fc) & (table.natt == natt)]
        if match.empty:
            raise UserError(f"row '{name}': no published row with fc={fc}, natt={natt}")
        picked.append(match)
    return pd.concat(picked, ignore_index=True)


def queue_commands(table, epochs=None, extra=()):
    """``dvc exp run --queue`` argument lists, one per row of ``table``.

    Args:
        table: rows of :func:`published_rows`.
        epochs: the epoch budget (None: the published 200 of each row).
        extra: further ``key=value`` settings given to every experiment (e.g. ``patience=10``).

    Returns:
        list of argv lists; experiment names are ``pub-fc<fc>-natt<natt>-e<epochs>``.
    """
    commands = []
    for row in table.itertuples(index=False):
        budget = int(row.epochs if epochs is None else epochs)
        name = f"pub-fc{row.fc}-natt{row.natt}-e{budget}"
        settings = [
            f"fc={row.fc}",
            f"natt={row.natt}",
            f"lr={row.lr:g}",
            f"weight_decay={row.weight_decay:g}",
            f"epochs={budget}",
        ]
        argv = ["dvc", "exp", "run", "--queue", "-n", name]
        for setting in [*settings, *extra]:
            argv += ["-S", setting]
        commands.append(argv)
    return commands


def _flat(tree, prefix=""):
    """A nested dict as one level, nested keys dotted: ``{"flash": {"seed": 0}}`` -> ``{"flash.seed": 0}``."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _files(files):
    """``{"params.yaml": {"data": {...}}, ...}`` -> ``{"params.yaml": {flat keys}, ...}``."""
    return {name: _flat((content or {}).get("data") or {}) for name, content in (files or {}).items()}


def experiments(show_json):
    """One record per revision in ``dvc exp show --json`` output (text or parsed).

    Returns:
        list of dicts: ``name`` (experiment name or revision), ``timestamp``, ``params`` (the
        keys of params.yaml, groups dotted: ``natt``, ``flash.seed``) and ``metrics`` (file ->
        its flat keys, e.g. ``metrics["metrics/eval.json"]["top1"]``).
    """
    tree = json.loads(show_json) if isinstance(show_json, str) else show_json
    records = []

    def visit(node):
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, dict) and ("params" in data or "metrics" in data):
                params = {}
                for values in _files(data.get("params")).values():
                    params.update(values)
                name = node.get("name") or data.get("name") or node.get("rev") or data.get("rev")
                records.append(
                    {
                        "name": name,
                        "timestamp": data.get("timestamp"),
                        "params": params,
                        "metrics": _files(data.get("metrics")),
                    }
                )
            for key in ("experiments", "revs"):
                visit(node.get(key))

    visit(tree)
    return records


def _same(a, b):
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False


def comparison(table, records, eval_file="metrics/eval.json"):
    """The comparison table: each published row with every distinct run of its settings.

    A record (of :func:`experiments`) belongs to a row when its params fc, natt, lr and
    weight_decay agree and it has test metrics (``top1`` in ``eval_file``); of several records
    with the same settings (including :data:`OPTIONS`) the latest counts. A row nobody ran
    appears once with empty "ours" columns.

    Returns:
        DataFrame with :data:`COLUMNS`; top-1 in %, ``train_minutes`` training time without
        validation.
    """
    rows = []
    for pub in table.itertuples(index=False):
        runs = [
            r
            for r in records
            if "top1" in r["metrics"].get(eval_file, {})
            and all(_same(r["params"].get(k), getattr(pub, k)) for k in KEYS)
        ]
        latest = {}
        for run in sorted(runs, key=lambda r: str(r.get("timestamp") or "")):
            latest[tuple(run["params"].get(k) for k in OPTIONS)] = run
        base = {k: getattr(pub, k) for k in KEYS} | {
            "published_ascend": pub.ascend_top1_pct,
            "published_gpu": pub.gpu_top1_pct,
        }
        if not latest:
            rows.append(base)
        for run in latest.values():
            ours = run["metrics"][eval_file]
            rows.append(
                base
                | {k: run["params"].get(k) for k in OPTIONS}
                | {
                    "ours_test_top1": ours.get("top1"),
                    "best_epoch": ours.get("best_epoch"),
                    "best_val_top1": ours.get("best_val_top1"),
                    "epochs": ours.get("epochs"),
                    "train_minutes": ours.get("train_minutes"),
                    "full_mnist": ours.get("full_mnist"),
                    "code_version": ours.get("code_version"),
                    "experiment": run["name"],
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def markdown(frame):
    """A GitHub markdown table of ``frame`` (empty cells for missing values)."""

    def cell(value):
        return (
            ""
            if value is None or (isinstance(value, float) and math.isnan(value))
            else f"{value:g}"
            if isinstance(value, float)
            else str(value)
        )

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.astype(object).itertuples(index=False)]
    return "\n".join(lines) + "\n"
