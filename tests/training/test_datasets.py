"""training.datasets: the fastai download code against a small archive served on loopback; label-noise columns."""

import csv
import functools
import http.server
import io
import os
import tarfile
import threading

import numpy as np
import pytest
from PIL import Image

from training import data, datasets

WNIDS = ("n01440764", "n02102040")


def _jpeg(seed):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _make_archive(path, name="imagenette2-160"):
    rows = []
    with tarfile.open(path, "w:gz") as tar:

        def add(arcname, payload):
            info = tarfile.TarInfo(arcname)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        for split in ("train", "val"):
            for w, wnid in enumerate(WNIDS):
                for i in range(2):
                    rel = f"{split}/{wnid}/{wnid}_{i}.JPEG"
                    add(f"{name}/{rel}", _jpeg(hash(rel) % 1000))
                    # noisy_labels_5: the first training image of each class gets the other class's label
                    noisy = WNIDS[1 - w] if (split == "train" and i == 0) else wnid
                    rows.append(
                        {
                            "path": rel,
                            "noisy_labels_0": wnid,
                            "noisy_labels_1": wnid,
                            "noisy_labels_5": noisy,
                            "noisy_labels_25": noisy,
                            "noisy_labels_50": noisy,
                            "is_valid": str(split == "val"),
                        }
                    )
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        add(f"{name}/noisy_imagenette.csv", out.getvalue().encode())


@pytest.fixture()
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    _make_archive(served / "imagenette2-160.tgz")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", served, httpd
    httpd.shutdown()
    httpd.server_close()


def test_download_unpack_and_reuse(tmp_path, server):
    url, served, httpd = server
    root = tmp_path / "datasets"
    path = datasets.download_fastai("imagenette", "160", str(root), base_url=url)
    assert path == str(root / "imagenette2-160")
    splits = data.load_splits(path)
    assert splits.class_names == WNIDS and len(splits.train_files) == 4 and len(splits.val_files) == 4
    assert not [n for n in os.listdir(root) if n.startswith(".")]  # no temporary leftovers
    httpd.shutdown()
    assert datasets.download_fastai("imagenette", "160", str(root), base_url=url) == path  # no network needed now


def test_interrupted_unpack_is_redone_from_the_kept_archive(tmp_path, server):
    url, _, _ = server
    root = tmp_path / "datasets"
    path = datasets.download_fastai("imagenette", "160", str(root), base_url=url)
    import shutil

    shutil.rmtree(os.path.join(path, "val"))  # as if a crash had left half a dataset
    assert datasets.download_fastai("imagenette", "160", str(root), base_url="http://127.0.0.1:9/") == path
    assert len(data.load_splits(path).val_files) == 4


def test_corrupt_archive_and_missing_file_errors(tmp_path, server):
    url, served, _ = server
    root = tmp_path / "datasets"
    root.mkdir()
    (root / "imagewoof2-160.tgz").write_bytes(b"not a tgz")
    with pytest.raises(RuntimeError, match="not a valid .tgz"):
        datasets.download_fastai("imagewoof", "160", str(root), base_url=url)
    assert not (root / "imagewoof2-160.tgz").exists()
    with pytest.raises(RuntimeError, match="could not download"):
        datasets.download_fastai("imagewoof", "160", str(root), base_url=url)  # 404 on the test server
    with pytest.raises(ValueError, match="size"):
        datasets.download_fastai("imagenette", "640", str(root), base_url=url)


def test_fastai_urls():
    assert (
        datasets.FASTAI_URL + datasets.ARCHIVES[("imagenette", "160")] + ".tgz"
        == "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"
    )
    assert datasets.ARCHIVES[("imagewoof", "full")] == "imagewoof2"


def test_label_noise_column_selection(tmp_path, server):
    url, _, _ = server
    path = datasets.download_fastai("imagenette", "160", str(tmp_path / "d"), base_url=url)
    splits = data.load_splits(path)
    clean = datasets.apply_label_noise(splits, 0)
    assert clean.train_labels == splits.train_labels
    noisy = datasets.apply_label_noise(splits, 5)
    flipped = [
        os.path.basename(f) for f, a, b in zip(splits.train_files, splits.train_labels, noisy.train_labels) if a != b
    ]
    assert sorted(flipped) == [f"{w}_0.JPEG" for w in WNIDS]
    assert noisy.val_labels == splits.val_labels
    with pytest.raises(ValueError, match="label_noise must be one of"):
        datasets.apply_label_noise(splits, 10)
    os.remove(os.path.join(path, "noisy_imagenette.csv"))
    with pytest.raises(ValueError, match="noisy_imagenette.csv"):
        datasets.apply_label_noise(splits, 5)
