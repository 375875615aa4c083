import gzip
import hashlib
import http.server
import threading
import time
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import SHARED_MNIST, synthetic_split

from attention_clusters import idx, mnist, mnist_sources
from attention_clusters.errors import UserError


def test_idx_round_trip():
    images, labels = synthetic_split(30, seed=1)
    assert np.array_equal(idx.decode_images(idx.encode_images(images), "x"), images)
    assert np.array_equal(idx.decode_labels(idx.encode_labels(labels), "y"), labels)
    raw = idx.encode_images(images[:2])
    assert raw[:16] == bytes.fromhex("00000803 00000002 0000001c 0000001c")
    assert len(raw) == 16 + 2 * 784


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda b: b[:10], "truncated"),
        (lambda b: b[:-1], "header says 3 images"),
        (lambda b: b + b"\0", "header says 3 images"),
        (lambda b: b"\0\0\x08\x01" + b[4:], "wrong magic number"),
        (lambda b: b[:8] + bytes.fromhex("0000001b") + b[12:], "27x28"),
    ],
)
def test_corrupt_images_name_the_file(corrupt, message):
    raw = corrupt(idx.encode_images(synthetic_split(3, seed=2)[0]))
    with pytest.raises(UserError, match=message) as err:
        idx.decode_images(raw, "some-images-file")
    assert str(err.value).startswith("some-images-file:")


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\0\0\x08\x01\0\0\0\x02" + b"\x01\x0a", "label 10 outside 0..9"),
        (b"\0\0\x08\x01\0\0\0\x05" + b"\x01\x02", "header says 5 labels"),
        (b"\0\0\x08\x03\0\0\0\x01" + b"\x01", "wrong magic"),
        (b"\0\0\x08", "truncated"),
    ],
)
def test_corrupt_labels_name_the_file(raw, message):
    with pytest.raises(UserError, match=message) as err:
        idx.decode_labels(raw, "some-labels-file")
    assert str(err.value).startswith("some-labels-file:")


def test_folder_source_reads_gz_and_raw(tmp_path, idx_files):
    for k, (name, data) in enumerate(idx_files.items()):
        if k % 2:
            (tmp_path / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (tmp_path / name).write_bytes(data)
    assert mnist_sources.from_folder(tmp_path) == idx_files
    description, files = mnist_sources.acquire("folder", str(tmp_path))
    assert files == idx_files and description == f"folder {tmp_path.resolve()}"


def test_folder_source_errors(tmp_path, idx_files):
    with pytest.raises(UserError, match="is not a folder"):
        mnist_sources.from_folder(tmp_path / "nowhere")
    with pytest.raises(UserError, match="missing train-images-idx3-ubyte"):
        mnist_sources.from_folder(tmp_path)
    for name, data in idx_files.items():
        (tmp_path / f"{name}.gz").write_bytes(data)  # not actually gzip
    with pytest.raises(UserError, match="not a valid gzip file"):
        mnist_sources.from_folder(tmp_path)
    name = "train-images-idx3-ubyte"
    damaged = bytearray(gzip.compress(idx_files[name], mtime=0))
    damaged[20:40] = bytes(20)  # valid header, corrupt deflate stream
    (tmp_path / f"{name}.gz").write_bytes(bytes(damaged))
    with pytest.raises(UserError, match="not a valid gzip file"):
        mnist_sources.from_folder(tmp_path)


def test_write_dataset_checks_before_writing(tmp_path, idx_files):
    out = tmp_path / "out"
    bad = dict(idx_files, **{"t10k-labels-idx1-ubyte": idx.encode_labels(np.zeros(19, np.uint8))})
    with pytest.raises(UserError, match="20 images but 19 labels"):
        mnist.write_dataset(bad, "test", out)
    assert not out.exists() or not any(out.iterdir())
    provenance = mnist.write_dataset(idx_files, "synthetic", out)
    assert provenance["counts"] == {"train": 60, "test": 20}
    assert provenance["full_mnist"] is False
    assert (
        provenance["sha256"]["train-images-idx3-ubyte"]
        == hashlib.sha256(idx_files["train-images-idx3-ubyte"]).hexdigest()
    )
    images, labels = mnist.read_split(out, "test")
    assert images.shape == (20, 28, 28) and labels.tolist() == [k % 10 for k in range(20)]
    assert sorted(p.name for p in out.iterdir()) == sorted(list(idx_files) + ["source.json"])


def test_embedded_default_is_deterministic_stratified_real_mnist():
    first, second = mnist_sources.embedded(), mnist_sources.embedded()
    assert first == second
    train = idx.decode_labels(first["train-labels-idx1-ubyte"], "train")
    test = idx.decode_labels(first["t10k-labels-idx1-ubyte"], "test")
    assert np.bincount(train).tolist() == [400] * 10
    assert np.bincount(test).tolist() == [100] * 10
    images = idx.decode_images(first["train-images-idx3-ubyte"], "train")
    assert images.shape == (4000, 28, 28)
    # real digits: mostly background, strokes up to 255, about 19% ink as in MNIST
    assert images.max() == 255 and 0.1 < (images > 0).mean() < 0.3


def test_full_mnist_folder_matches_published_sha256(tmp_path):
    if not SHARED_MNIST.is_dir():
        pytest.skip("shared full MNIST not present")
    provenance = mnist.write_dataset(mnist_sources.from_folder(SHARED_MNIST), "folder", tmp_path)
    assert provenance["full_mnist"] is True
    assert provenance["counts"] == {"train": 60000, "test": 10000}


@pytest.fixture
def mirror(tmp_path, idx_files):
    """A local HTTP server serving the synthetic files gzip-compressed, like a mirror.

    Yields a namespace: ``url``; ``folder``, the folder it serves; ``failures``, how many of the
    next requests it answers with HTTP 500; ``delay_s``, how long it waits before answering;
    ``watch``, a folder whose contents (paths relative to it) it records in ``seen`` at each
    request. A test sets ``failures``, ``delay_s`` and ``watch``.
    """
    folder = tmp_path / "served"
    folder.mkdir()
    for name, data in idx_files.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
    state = SimpleNamespace(folder=folder, failures=0, delay_s=0, watch=None, seen=[])

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if state.watch is not None:
                state.seen.append(sorted(str(p.relative_to(state.watch)) for p in state.watch.rglob("*")))
            time.sleep(state.delay_s)
            if state.failures:
                state.failures -= 1
                self.send_error(500)
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    yield state
    server.shutdown()


def served_md5(mirror):
    """The MD5 of each .gz the local mirror serves (stands in for the published ones)."""
    return {name: hashlib.md5((mirror.folder / f"{name}.gz").read_bytes()).hexdigest() for name in mnist.NAMES}


def test_mirror_download_verifies_md5_in_a_temporary_folder(mirror, idx_files, monkeypatch, capsys, tmp_path):
    out, dead = tmp_path / "out", "http://127.0.0.1:9/"
    # published MD5s do not match our synthetic files: the mirror is rejected
    assert mnist_sources.from_mirrors(2, 0, out, mirrors=(dead, mirror.url)) == (None, None)
    refused, mismatch = capsys.readouterr().err.splitlines()
    assert refused.startswith(f"download_mnist: mirror failed: {dead}train-images-idx3-ubyte.gz: ConnectionError: ")
    assert "Connection refused" in refused
    assert mismatch == (
        f"download_mnist: mirror failed: {mirror.url}train-images-idx3-ubyte.gz: MD5 mismatch "
        "(expected the published f68b3c2dcbeaaa9fbdd348bbdeb94873)"
    )
    monkeypatch.setattr(mnist_sources, "GZ_MD5", served_md5(mirror))
    mirror.watch = out
    assert mnist_sources.from_mirrors(2, 0, out, mirrors=(dead, mirror.url)) == (mirror.url, idx_files)
    # every file went into one temporary folder inside the output, gone afterwards
    folders = {path.split("/")[0] for seen in mirror.seen for path in seen}
    assert len(mirror.seen) == 4 and len(folders) == 1 and folders.pop().startswith(".download-")
    assert "train-labels-idx1-ubyte.gz" in {path.split("/")[-1] for path in mirror.seen[-1]}
    assert not any(out.iterdir())


def test_retries_and_timeout_are_honoured(mirror, idx_files, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(mnist_sources, "GZ_MD5", served_md5(mirror))
    mirror.failures = 1
    assert mnist_sources.from_mirrors(2, 0, tmp_path, mirrors=(mirror.url,)) == (None, None)
    assert f"{mirror.url}train-images-idx3-ubyte.gz: HTTPError: 500 Server Error" in capsys.readouterr().err
    mirror.failures = 1
    assert mnist_sources.from_mirrors(2, 1, tmp_path, mirrors=(mirror.url,)) == (mirror.url, idx_files)
    mirror.delay_s = 2
    start = time.monotonic()
    assert mnist_sources.from_mirrors(0.5, 0, tmp_path, mirrors=(mirror.url,)) == (None, None)
    assert time.monotonic() - start < 2
    assert "ReadTimeout" in capsys.readouterr().err and not any(tmp_path.glob(".download-*"))


def test_auto_falls_back_to_embedded_loudly(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(mnist_sources, "MIRRORS", ("http://127.0.0.1:9/",))
    description, files = mnist_sources.acquire("auto", timeout_s=1, retries=0, download_dir=tmp_path)
    assert description.startswith("embedded") and files == mnist_sources.embedded()
    assert "NO MNIST MIRROR ANSWERED" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


class _ShortRead(http.server.BaseHTTPRequestHandler):
    """A mirror that promises 100,000 bytes, sends 10 and closes the connection."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_a_mirror_closing_mid_file_moves_on_to_the_next(mirror, idx_files, monkeypatch, capsys, tmp_path):
    short = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ShortRead)
    threading.Thread(target=short.serve_forever, daemon=True).start()
    short_url = f"http://127.0.0.1:{short.server_address[1]}/"
    try:
        monkeypatch.setattr(mnist_sources, "GZ_MD5", served_md5(mirror))
        assert mnist_sources.from_mirrors(2, 0, tmp_path, mirrors=(short_url, mirror.url)) == (mirror.url, idx_files)
        err = capsys.readouterr().err
        assert (
            f"mirror failed: {short_url}train-images-idx3-ubyte.gz: ChunkedEncodingError: "
            "Connection broken: IncompleteRead(10 bytes read, 99990 more expected)"
        ) in err
        monkeypatch.setattr(mnist_sources, "MIRRORS", (short_url,))
        description, files = mnist_sources.acquire("auto", timeout_s=2, retries=0, download_dir=tmp_path)
        assert description.startswith("embedded") and len(files) == 4
    finally:
        short.shutdown()


def test_raw_and_gz_of_one_file_must_agree(tmp_path, idx_files):
    for name, data in idx_files.items():
        (tmp_path / name).write_bytes(data)
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(data))
    assert mnist_sources.from_folder(tmp_path) == idx_files  # the same digits twice: fine
    name = "t10k-labels-idx1-ubyte"
    other = idx.encode_labels(np.zeros(20, np.uint8))
    (tmp_path / f"{name}.gz").write_bytes(gzip.compress(other))
    with pytest.raises(UserError) as err:
        mnist_sources.from_folder(tmp_path)
    assert str(err.value) == f"{tmp_path / name} and {tmp_path / name}.gz hold different data; keep only one of them"
