"""predict: a video as GIF, folder or .npy gives the eval stage's numbers; bad input is one line.

The model is random-initialised (nothing trained), saved to a temporary folder: the test is
about reading the video and running the same networks, not about accuracy.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import attention_clusters
from attention_clusters import batching, checkpoints, device, features, onednn, plots, predict, storage, trained_model
from attention_clusters.errors import UserError
from attention_clusters.models.attention_cluster import AttentionWeights

device.init("CPU", seed=0)
SRC = os.path.dirname(os.path.dirname(attention_clusters.__file__))


def make_video(seed):
    """A Flash-MNIST-like video: noise frames, a bright blob on a few of them."""
    rng = np.random.default_rng(seed)
    video = (rng.random((25, 28, 28)) < 0.2).astype(np.uint8) * rng.integers(0, 256, (25, 28, 28), dtype=np.uint8)
    for k in rng.choice(25, 4, replace=False):
        video[k, 6:22, 10:18] = 255
    return video


def save_gif(frames, path):
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=80, loop=0)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """Checkpoints saved as the feature and train stages save them: the extractor after one
    training step on random frames (inside its Noisy-MNIST classifier, as the stage trains it), a
    random fc=2 natt=3 Attention Cluster with its JSON. Also the networks themselves, in memory."""
    folder = tmp_path_factory.mktemp("model")
    paths = {"extractor": folder / "extractor.ckpt", "model": folder / "attention_cluster.ckpt"}
    rng = np.random.default_rng(5)
    frames, labels = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), rng.integers(0, 11, 64).astype(np.uint8)
    extractor, _ = features.train_extractor(frames, labels, 1, 1e-3, 64, 0, device.phase_convolutions_fast())
    checkpoints.save_checkpoint(extractor, paths["extractor"])
    net = trained_model.build_model(2, 3)
    checkpoints.save_checkpoint(net, paths["model"])
    config = {"fc": 2, "natt": 3, "feature_dims": [50], "num_classes": 1024}
    storage.write_json(folder / "attention_cluster.json", config)
    return dict(paths, networks=(extractor, net))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """One video as .npy, animated GIF and a folder of PNGs named frame1..frame25."""
    folder = tmp_path_factory.mktemp("video")
    video = make_video(0)
    np.save(folder / "video.npy", video)
    save_gif([Image.fromarray(frame) for frame in video], folder / "video.gif")
    (folder / "frames").mkdir()
    for k, frame in enumerate(video):
        Image.fromarray(frame).save(folder / "frames" / f"frame{k + 1}.png")
    return video, {"npy": folder / "video.npy", "gif": folder / "video.gif", "folder": folder / "frames"}


def direct(model, video):
    """The feature stage's extraction and the eval stage's prediction with the networks as trained."""
    extractor, net = model["networks"]
    feats = np.empty((1, 25, 50), np.float32)
    features.extract(extractor, video[None], feats, 64)
    return batching.predict(net, feats, trained_model.EVAL_BATCH), batching.predict(AttentionWeights(net), feats, 4)


def run_predict(model, video_path, *extra):
    return predict.run(
        predict.parse_args(
            [str(video_path), "--extractor", str(model["extractor"]), "--model", str(model["model"]), *extra]
        )
    )


@pytest.mark.parametrize("kind", ["npy", "gif", "folder"])
def test_each_input_kind_reads_the_same_frames(inputs, kind):
    video, paths = inputs
    got, notes = predict.load_video(paths[kind])
    assert got.dtype == np.uint8 and got.shape == (25, 28, 28)
    np.testing.assert_array_equal(got, video)
    assert notes == []  # grey 28x28 frames: nothing converted


def test_prediction_is_the_eval_stages(model, inputs):
    video, _ = inputs
    extractor, net, config = predict.load_networks(model["extractor"], model["model"])
    assert (config["fc"], config["natt"]) == (2, 3)
    result = predict.classify(extractor, net, video)
    logits, weights = direct(model, video)
    np.testing.assert_array_equal(result["logits"], logits[0])
    np.testing.assert_allclose(result["weights"], weights[0], rtol=1e-6)
    assert result["weights"].shape == (3, 25)
    probabilities = np.exp(logits[0] - logits[0].max())
    probabilities /= probabilities.sum()
    np.testing.assert_allclose(result["probabilities"], probabilities, rtol=1e-5)
    best = predict.top_sets(result["probabilities"])
    assert [label for label, _ in best] == list(np.argsort(-logits[0], kind="stable")[:5])
    assert best[0][1] == pytest.approx(probabilities.max(), rel=1e-5)


def test_every_input_kind_prints_the_same_report(model, inputs, capsys, tmp_path):
    video, paths = inputs
    printed = {}
    for kind, path in paths.items():
        summary = run_predict(model, path, "--png", str(tmp_path / f"{kind}.png"))
        assert summary == f"attention picture written to {tmp_path / kind}.png"
        printed[kind] = capsys.readouterr().out.splitlines()
        assert Image.open(tmp_path / f"{kind}.png").format == "PNG"
    assert printed["gif"] == printed["npy"] == printed["folder"]
    logits, _ = direct(model, video)
    best = int(np.argmax(logits[0]))
    digits = " ".join(str(d) for d in range(10) if best >> d & 1) or "none"
    assert printed["npy"][0].startswith(f"digits present: {digits} (label {best}, probability ")
    assert printed["npy"][1] == "top-5 digit sets:"
    assert len(printed["npy"]) == 7 and f"label {best:4d}" in printed["npy"][2]
    assert plots.digits_text(best) in printed["npy"][2]


def test_colour_and_size_are_converted_and_said(tmp_path):
    video = make_video(1)
    big = [Image.fromarray(frame).resize((56, 56), Image.NEAREST).convert("RGB") for frame in video]
    big[3] = Image.fromarray(np.dstack([np.asarray(big[3])[..., 0], np.zeros((56, 56, 2), np.uint8)]))  # red
    save_gif(big, tmp_path / "big.gif")
    got, notes = predict.load_video(tmp_path / "big.gif")
    assert got.shape == (25, 28, 28) and got.dtype == np.uint8
    expected = np.asarray(Image.open(tmp_path / "big.gif").convert("L").resize((28, 28), Image.LANCZOS))
    np.testing.assert_array_equal(got[0], expected)
    assert "resized 56x56 to 28x28 (25 frames)" in notes
    assert [note for note in notes if "grey" in note] == ["converted RGB to 8-bit grey (1 frames)"]


def test_folder_frames_are_in_natural_order(tmp_path):
    names = [f"f{k}.png" for k in range(1, 26)]
    assert sorted(names, key=predict.natural_key)[:3] == ["f1.png", "f2.png", "f3.png"]
    assert sorted(names, key=predict.natural_key)[-1] == "f25.png"


def bad_inputs(tmp_path):
    """(path, expected message) for each kind of bad video."""
    video = make_video(2)
    cases = []
    np.save(tmp_path / "short.npy", video[:24])
    cases.append(("short.npy", "expected a uint8 array of shape (25, 28, 28), got uint8 (24, 28, 28)"))
    np.save(tmp_path / "float.npy", video.astype(np.float32))
    cases.append(("float.npy", "expected a uint8 array of shape (25, 28, 28), got float32 (25, 28, 28)"))
    (tmp_path / "empty.gif").write_bytes(b"")
    cases.append(("empty.gif", "the file is empty"))
    (tmp_path / "empty.npy").write_bytes(b"")
    cases.append(("empty.npy", "the file is empty"))
    (tmp_path / "text.gif").write_text("not a picture\n")
    cases.append(("text.gif", "not an image Pillow can read"))
    (tmp_path / "text.npy").write_text("not an array\n")
    cases.append(("text.npy", "not a valid .npy array file"))
    np.savez(tmp_path / "archive.npz", video=video)
    (tmp_path / "archive.npz").rename(tmp_path / "archive.npy")
    cases.append(("archive.npy", "a .npz archive, expected a .npy array file"))
    save_gif([Image.fromarray(frame) for frame in video[:24]], tmp_path / "short.gif")
    cases.append(("short.gif", "has 24 frames, expected 25"))
    Image.fromarray(video[0]).save(tmp_path / "still.png")
    cases.append(("still.png", "has 1 frames, expected 25"))
    (tmp_path / "few").mkdir()
    for k in range(3):
        Image.fromarray(video[k]).save(tmp_path / "few" / f"{k}.png")
    cases.append(("few", "has 3 image files, expected 25"))
    (tmp_path / "mixed").mkdir()
    for k in range(24):
        Image.fromarray(video[k]).save(tmp_path / "mixed" / f"{k}.png")
    (tmp_path / "mixed" / "notes.txt").write_text("frame 24 is missing\n")
    cases.append(("mixed/notes.txt", "not an image Pillow can read"))
    (tmp_path / "cut").mkdir()
    for k in range(25):
        Image.fromarray(video[k]).save(tmp_path / "cut" / f"{k}.png")
    whole = (tmp_path / "cut" / "7.png").read_bytes()
    (tmp_path / "cut" / "7.png").write_bytes(whole[: len(whole) // 2])  # cut inside its pixel data
    cases.append(("cut/7.png", "broken image (image file is truncated"))
    cases.append(("missing.gif", "not found (expected an animated GIF, a folder of 25 images or a .npy)"))
    return cases


def test_bad_videos_are_one_line_naming_the_file(tmp_path):
    for name, message in bad_inputs(tmp_path):
        path = tmp_path / (name.split("/")[0])
        with pytest.raises(UserError) as err:
            predict.load_video(path)
        text = str(err.value)
        assert text.startswith(f"{tmp_path / name}: ") and message in text, (name, text)
        assert "\n" not in text


def test_missing_model_is_one_line(model, tmp_path):
    missing = tmp_path / "nowhere" / "attention_cluster.ckpt"
    with pytest.raises(UserError, match=r"attention_cluster.ckpt: model not found; train it \(dvc repro train\)"):
        predict.load_networks(model["extractor"], missing)
    with pytest.raises(UserError, match=r"extractor.ckpt: model not found; train it \(dvc repro feature\)"):
        predict.load_networks(tmp_path / "extractor.ckpt", model["model"])


@pytest.mark.parametrize("value", ["0", "-3", "100001", "5000000", "8.5", "²", "٣", " 5", "1e3", "9" * 5000])
def test_batch_videos_must_be_in_the_params_range(capsys, value):
    with pytest.raises(SystemExit):
        predict.parse_args(["video.gif", "--batch-videos", value])
    assert f"--batch-videos: expected an integer from 1 to 100,000, got '{value}'" in capsys.readouterr().err


def test_batch_videos_in_range_are_taken():
    assert predict.parse_args(["video.gif", "--batch-videos", "8"]).batch_videos == 8
    assert predict.parse_args(["video.gif", "--batch-videos", "100000"]).batch_videos == 100_000


def test_png_path_is_checked_before_any_work(tmp_path, capsys):
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "file").write_text("x")
    cases = {
        str(tmp_path / "out.jpg"): "expected a path ending in .png (the picture is a PNG)",
        str(tmp_path / "folder.png"): "is a folder, expected a .png file path",
        str(tmp_path / "file" / "sub" / "out.png"): f"{tmp_path / 'file'} is a file, not a folder",
    }
    for png, message in cases.items():
        with pytest.raises(SystemExit):
            predict.parse_args(["video.gif", "--png", png])
        assert f"--png: {png}: {message}" in capsys.readouterr().err
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    more = {
        str(tmp_path / ("a" * 240 + ".png")): "the file name is too long (at most 231 bytes)",
        str(tmp_path / ("a" * 300) / "x.png"): "not a usable path (File name too long)",
        "~/out.png": "~ is not expanded here; give the path itself",
        str(tmp_path / "new.png") + "/": "expected a path ending in .png",
        str(tmp_path / "broken" / "x.png"): f"{tmp_path / 'broken'} is a broken link",
    }
    for png, message in more.items():
        with pytest.raises(SystemExit):
            predict.parse_args(["video.gif", "--png", png])
        assert f"--png: {png}: {message}" in capsys.readouterr().err
    new = tmp_path / "new" / "deeper" / "out.PNG"  # missing folders are created when it is written
    assert predict.parse_args(["video.gif", "--png", str(new)]).png == new


def test_unwritable_png_is_one_line(model, inputs):
    _, paths = inputs
    with pytest.raises(UserError, match=r"^/proc/attention\.png: cannot write it \(.*\); no file was created$"):
        run_predict(model, paths["npy"], "--png", "/proc/attention.png")


def test_png_may_not_replace_the_video_or_join_its_frames(model, inputs, tmp_path):
    video, paths = inputs
    animated = tmp_path / "video.png"
    frames = [Image.fromarray(frame) for frame in video]
    frames[0].save(animated, save_all=True, append_images=frames[1:])
    with pytest.raises(UserError, match="is the video itself; write the picture elsewhere"):
        run_predict(model, animated, "--png", str(animated))
    with pytest.raises(UserError, match="is inside the video's folder .*, whose files are its frames"):
        run_predict(model, paths["folder"], "--png", str(paths["folder"] / "attention.png"))
    assert len(list(paths["folder"].iterdir())) == 25


def test_wrong_checkpoint_as_extractor_names_the_extractor(model, inputs):
    _, paths = inputs
    args = [str(paths["npy"]), "--extractor", str(model["model"]), "--model", str(model["model"])]
    with pytest.raises(UserError) as err:
        predict.run(predict.parse_args(args))
    text = str(err.value)
    assert "checkpoint lacks" in text and "the frame extractor" in text
    assert text.endswith("expected the feature stage's checkpoint (models/extractor.ckpt)"), text


def test_command_line_error_has_no_traceback(model, inputs, tmp_path):
    _, paths = inputs
    command = [
        sys.executable,
        "-m",
        "attention_clusters.predict",
        str(paths["npy"]),
        "--extractor",
        str(model["extractor"]),
        "--model",
        str(tmp_path / "m.ckpt"),
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=SRC), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "WARNING" not in line]
    message = "model not found; train it (dvc repro train) or give its path"
    assert errors == [f"predict: error: {tmp_path / 'm.ckpt'}: {message}"]


def test_importing_predict_sets_no_onednn_cap():
    """Only the command line caps oneDNN (predict.main): importing the module, as tests and user
    code do, leaves os.environ without a cap."""
    env = {name: value for name, value in os.environ.items() if name not in onednn.CAP_VARIABLES}
    code = (
        "import os; from attention_clusters import onednn, predict; "
        "print([n for n in onednn.CAP_VARIABLES if n in os.environ])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=dict(env, PYTHONPATH=SRC), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_out_of_memory_names_the_batch(model, inputs, monkeypatch):
    _, paths = inputs

    def too_big(*args):
        raise MemoryError("Unable to allocate 91.3 GiB")

    monkeypatch.setattr(predict, "classify", too_big)
    with pytest.raises(UserError, match=r"^--batch-videos 5000: out of memory padding one video to that batch; use"):
        run_predict(model, paths["npy"], "--batch-videos", "5000")

    def allocator_fails(*args):  # MindSpore's CPU allocator raises RuntimeError, not MemoryError
        raise RuntimeError("Memory not enough: current free memory size[0] is smaller than required size")

    monkeypatch.setattr(predict, "classify", allocator_fails)
    with pytest.raises(UserError, match=r"^--batch-videos 90000: out of memory"):
        run_predict(model, paths["npy"], "--batch-videos", "90000")

    def other_error(*args):
        raise RuntimeError("some other failure")

    monkeypatch.setattr(predict, "classify", other_error)
    with pytest.raises(RuntimeError, match="some other failure"):  # a bug is not reported as memory
        run_predict(model, paths["npy"])
