import copy

import pytest
import yaml
from conftest import ROOT

from attention_clusters import params
from attention_clusters.errors import UserError

DEFAULTS = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_value(key, value):
    tree = copy.deepcopy(DEFAULTS)
    node = tree
    *groups, last = key.split(".")
    for group in groups:
        node = node[group]
    node[last] = value
    return tree


def test_repo_params_are_valid_and_use_modelzoo_names():
    p = params.load(ROOT / "params.yaml")
    assert (p.fc, p.natt, p.lr, p.weight_decay, p.batch_size, p.epochs) == (1, 1, 0.001, 0.0, 64, 200)
    assert p.flash.train_per_label == 100
    assert (p.loss_reduction, p.optimizer, p.lr_schedule, p.warmup_epochs, p.patience) == (
        "sum",
        "adam",
        "constant",
        0,
        0,
    )  # ModelZoo


@pytest.mark.parametrize(
    "key, value",
    [
        ("natt", 0),
        ("natt", 2.5),
        ("natt", True),
        ("fc", 3),
        ("lr", 0),
        ("lr", "fast"),
        ("weight_decay", -1e-4),
        ("batch_size", 0),
        ("epochs", -1),
        ("noisy.train_noise", -5),
        ("flash.test_per_label", 0),
        ("mnist.source", ""),
        ("mnist.source", "/path/to/mnist"),
        ("mnist.folder", ""),
        ("mnist.folder", "~/mnist"),
        ("device_target", "TPU"),
        ("fc", 1.0),
        ("fc", True),
        ("weight_decay", 10**400),
        ("flash.train_per_label", 10**12),
        ("natt", 10**6),
        ("optimizer", "sgd"),
        ("loss_reduction", "none"),
        ("lr_schedule", "step"),
        ("warmup_epochs", -1),
        ("patience", 1.5),
        ("report_test", 1),
        ("flash.min_per_label", 0),
    ],
)
def test_bad_value_names_the_key(key, value):
    with pytest.raises(UserError) as err:
        params.validate(with_value(key, value))
    message = str(err.value)
    assert key in message and "\n" not in message and "None" not in message  # says what is expected


def test_a_folder_as_mnist_source_says_how_to_name_it():
    with pytest.raises(UserError) as err:
        params.validate(with_value("mnist.source", "/data/mnist"))
    assert str(err.value).endswith("set mnist.source=folder and mnist.folder=PATH), got '/data/mnist'")


def test_unknown_and_missing_keys_are_named():
    tree = copy.deepcopy(DEFAULTS)
    tree["nat"] = 4
    with pytest.raises(UserError, match="unknown key 'nat'"):
        params.validate(tree)
    del tree["nat"], tree["flash"]["seed"]
    with pytest.raises(UserError, match="missing key 'flash.seed'"):
        params.validate(tree)


def test_a_misspelt_key_is_named_before_the_key_it_replaces():
    tree = copy.deepcopy(DEFAULTS)
    tree["nat"] = tree.pop("natt")
    with pytest.raises(UserError, match="unknown key 'nat' "):
        params.validate(tree)
    tree = copy.deepcopy(DEFAULTS)
    tree["mnist"]["sorce"] = tree["mnist"].pop("source")
    with pytest.raises(UserError, match=r"unknown key 'mnist.sorce' \(known keys: mnist.source, mnist.folder, "):
        params.validate(tree)


def test_unreadable_files(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        params.load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("fc: [1\n")
    with pytest.raises(UserError, match="not valid YAML"):
        params.load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        params.load(tmp_path / "params.yaml")


def test_exponent_strings_are_numbers():
    # PyYAML reads 1e-3 (no dot) as a string; `dvc exp run -S lr=1e-3` must still work
    p = params.validate(with_value("lr", "1e-3"))
    assert p.lr == 0.001 and isinstance(p.lr, float)
    assert params.validate(with_value("weight_decay", 0)).weight_decay == 0.0
    with pytest.raises(UserError, match=r"lr must be a number > 0 and <= 1e\+06, got 'fast'"):
        params.validate(with_value("lr", "fast"))


def test_empty_group_and_odd_files(tmp_path):
    tree = copy.deepcopy(DEFAULTS)
    tree["mnist"] = None
    with pytest.raises(UserError, match="mnist must be a group of keys"):
        params.validate(tree)
    (tmp_path / "params.yaml").write_bytes(b"\xff\xfe")
    with pytest.raises(UserError, match="not UTF-8"):
        params.load(tmp_path / "params.yaml")
    with pytest.raises(UserError, match="cannot read"):
        params.load(tmp_path)


@pytest.mark.parametrize(
    "text, key, line",
    [
        ("fc: 1\nnatt: 1\nnatt: 8\n", "natt", 3),
        ("mnist:\n  source: auto\n  retries: 1\n  source: embedded\n", "source", 4),
    ],
)
def test_duplicate_key_is_refused_with_its_name(tmp_path, text, key, line):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        params.load(path)
    assert str(err.value) == f"{path}: key '{key}' appears twice (again at line {line}); keep one"
