"""Exported MINDIR and ONNX read back by consumers we did not write, against the checkpoint."""

import mindspore as ms
import numpy as np
import pytest
from mindspore.train import mind_ir_pb2

from attention_clusters import checkpoints, device, export, inference, trained_model
from attention_clusters.errors import UserError
from attention_clusters.storage import write_json

device.init("CPU", seed=0)


@pytest.fixture(params=[(1, 4), (2, 8)], ids=["fc1-natt4", "fc2-natt8"])
def checkpoint(request, tmp_path):
    fc, natt = request.param
    net = trained_model.build_model(fc, natt)
    path = tmp_path / "attention_cluster.ckpt"
    checkpoints.save_checkpoint(net, path)
    write_json(path.with_suffix(".json"), {"fc": fc, "natt": natt, "feature_dims": [50], "num_classes": 1024})
    return path


def test_exports_match_checkpoint(checkpoint):
    net, config = trained_model.load_model(checkpoint)
    net.set_train(False)
    x = np.random.default_rng(1).standard_normal((16, 25, 50)).astype(np.float32)
    expected = net(ms.Tensor(x)).asnumpy()
    for file_format, suffix in export.FORMATS.items():
        path = checkpoint.with_suffix(suffix)
        export.export(net, 16, 25, 50, path, file_format)
        runner = export.load_runner(path)
        assert isinstance(runner, export.MindirRunner if file_format == "MINDIR" else export.OnnxRunner)
        got = runner(x)
        assert got.shape == (16, 1024)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=file_format)


def test_mindir_bytes_depend_on_the_network_alone(checkpoint):
    net, _ = trained_model.load_model(checkpoint)
    first, second = checkpoint.with_name("first.mindir"), checkpoint.with_name("second.mindir")
    for path in (first, second):
        export.export(net, 16, 25, 50, path, "MINDIR")
    assert first.read_bytes() == second.read_bytes()
    model = mind_ir_pb2.ModelProto()
    model.ParseFromString(first.read_bytes())
    assert [a.s for a in model.graph.attribute if a.name == "compile_phase"] == [b"export.mindir"]
    names = [primitive.name for primitive in model.primitives]
    assert len(names) > 5 and names == sorted(names)


def test_onnx_uses_no_mindspore_at_run_time(checkpoint):
    import onnx

    net, _ = trained_model.load_model(checkpoint)
    path = checkpoint.with_suffix(".onnx")
    export.export(net, 4, 25, 50, path, "ONNX")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [4, 25, 50]


def test_load_model_refuses_a_different_shape(checkpoint):
    _, config = trained_model.load_model(checkpoint)
    with pytest.raises(UserError, match=f"trained with natt={config['natt']}"):
        trained_model.load_model(checkpoint, expect={"natt": config["natt"] + 1})


def test_310_flow_counts_every_sample(checkpoint, tmp_path):
    net, _ = trained_model.load_model(checkpoint)
    net.set_train(False)
    rng = np.random.default_rng(2)
    features = rng.standard_normal((37, 25, 50)).astype(np.float32)
    labels = rng.integers(0, 1024, 37)
    path = checkpoint.with_suffix(".mindir")
    export.export(net, 8, 25, 50, path, "MINDIR")
    files = inference.preprocess(features, labels, 8, tmp_path / "infer")
    assert len(files) == 5 and files[-1].stat().st_size == 8 * 25 * 50 * 4
    latencies = inference.run(export.MindirRunner(path), files, (25, 50), tmp_path / "infer")
    assert latencies.shape == (5,) and (latencies > 0).all()
    predictions, read_labels = inference.postprocess(tmp_path / "infer", 1024)
    assert np.array_equal(read_labels, labels)
    assert np.array_equal(predictions, np.argmax(net(ms.Tensor(features)).asnumpy(), axis=1))


@pytest.mark.parametrize("file_format", export.FORMATS)
def test_runners_split_and_pad_any_batch_to_the_exported_one(checkpoint, file_format):
    net, _ = trained_model.load_model(checkpoint)
    net.set_train(False)
    path = checkpoint.with_suffix(export.FORMATS[file_format])
    export.export(net, 16, 25, 50, path, file_format)
    runner = export.load_runner(path)
    x = np.random.default_rng(3).standard_normal((37, 25, 50)).astype(np.float32)
    expected = net(ms.Tensor(x)).asnumpy()
    for n in (1, 8, 16, 37):  # fewer than, as many as and more than the exported batch
        got = runner(x[:n])
        assert got.shape == (n, 1024)
        np.testing.assert_allclose(got, expected[:n], rtol=1e-5, atol=1e-5, err_msg=f"{file_format} at {n}")
    assert runner.input_shape == (16, 25, 50)
    with pytest.raises(UserError) as err:
        runner(x[:, :, :40])
    expected = "exported for float32 input (N, 25, 50) run in batches of 16, got shape (37, 25, 40)"
    assert str(err.value) == f"{path}: {expected}"
