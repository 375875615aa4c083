"""The model registry: dvc.yaml's artifacts parse (by DVC itself) and each is a stage's output."""

import pytest
import yaml
from conftest import ROOT
from dvc.repo.artifacts import check_name_format

from attention_clusters import inputs

DVC_YAML = ROOT / "dvc.yaml"


@pytest.fixture(scope="module")
def tree():
    return yaml.safe_load(DVC_YAML.read_text(encoding="utf-8"))


def test_the_trained_model_is_a_registered_model(tree):
    model = tree["artifacts"]["attention-cluster"]
    assert model["path"] == "models/attention_cluster.ckpt" and model["type"] == "model"
    assert "MINDIR" in model["desc"] and "ONNX" in model["desc"] and "flash-mnist" in model["labels"]
    exported = {tree["artifacts"][name]["path"] for name in ("attention-cluster-mindir", "attention-cluster-onnx")}
    assert exported == {"models/attention_cluster.mindir", "models/attention_cluster.onnx"}


def test_every_artifact_is_an_output_of_a_stage(tree):
    stages = inputs.load_stages("train", DVC_YAML)
    makers = {}
    for name, artifact in tree["artifacts"].items():
        check_name_format(name)  # DVC's (gto's) rule for artifact names: raises on a bad one
        assert set(artifact) <= {"path", "type", "desc", "labels", "meta"}, name
        assert artifact["type"] == "model" and artifact["desc"].strip() and artifact["labels"], name
        makers[name] = inputs.producer(artifact["path"], stages)
        outs = [next(iter(out)) if isinstance(out, dict) else out for out in stages[makers[name]]["outs"]]
        assert artifact["path"] in outs, name  # a cached output, not a metric or plot
    assert makers == {
        "attention-cluster": "train",
        "frame-extractor": "feature",
        "attention-cluster-mindir": "export_mindir",
        "attention-cluster-onnx": "export_mindir",
    }


def test_dvc_reads_the_artifacts():
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        found = repo.artifacts.read()["dvc.yaml"]
    assert found["attention-cluster"].path == "models/attention_cluster.ckpt"
    assert found["attention-cluster"].type == "model"
    assert sorted(found) == sorted(yaml.safe_load(DVC_YAML.read_text(encoding="utf-8"))["artifacts"])
    assert len(found) == 4
