"""End-to-end runs of the trainer on generated JPEG folders .

Real processes (`python -m training.train`, `training.evaluate`, `training.predict`),
real folders through the real loader, 32 px B0, one or two steps per epoch.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from training import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
TINY = ["--image_size=32", "--batch_size=8", "--synthetic_per_class=4", "--verbose=2"]


def _module(name, *args, timeout=600, env=None):
    return subprocess.run(
        [sys.executable, "-m", name, *args], cwd=REPO, env=env or ENV, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    # The same arguments as training.train's --dataset=synthetic --synthetic_per_class=4, so runs reuse it.
    root = str(tmp_path_factory.mktemp("synthetic") / "data")
    return synthetic.generate(root, train_per_class=4, val_per_class=1, image_size=64, seed=0)


def _metrics(model_dir):
    with open(os.path.join(model_dir, "metrics.json")) as f:
        return json.load(f)


def test_one_step_two_replicas_then_evaluate_and_predict(tmp_path, data_dir):
    """MirroredStrategy on 2 logical CPUs, one step, then the saved model through evaluate and predict."""
    from keras_effnet import keras_versions

    model_dir = str(tmp_path / "run")
    proc = _module(
        "training.train",
        f"--out={model_dir}",
        f"--data_dir={data_dir}",
        "--strategy=mirrored",
        "--cpu_replicas=2",
        "--sync_bn",
        "--epochs=1",
        "--steps_per_epoch=1",
        *TINY,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "images/s" in proc.stdout and "epoch 1/1" in proc.stdout
    m = _metrics(model_dir)
    assert m["num_replicas"] == 2 and m["strategy"] == "MirroredStrategy" and m["per_replica_batch_size"] == 4
    (e,) = m["epochs"]
    assert e["epoch"] == 1 and e["steps"] == 1
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "images_per_sec", "seconds"):
        assert np.isfinite(e[key]), key
    with open(os.path.join(model_dir, "labels.txt")) as f:
        assert f.read().split() == sorted(synthetic.CLASSES)
    assert any(n.startswith("events.out") for _, _, files in os.walk(os.path.join(model_dir, "logs")) for n in files)
    assert not [n for n in os.listdir(model_dir) if n.endswith(".tmp") or n.startswith(".")]
    keras = keras_versions.keras3()
    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"), safe_mode=True)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 10)
    assert all(not getattr(layer, "synchronized", False) for layer in model.layers)

    proc = _module("training.evaluate", f"--model={model_dir}/model.keras", f"--data_dir={data_dir}", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["num_images"] == 10
    # The saved model on the same validation images: the accuracy the trainer recorded for its last epoch.
    assert result["top1"] == pytest.approx(m["epochs"][-1]["val_accuracy"])
    assert result["top5"] == pytest.approx(m["epochs"][-1]["val_top5"])
    assert set(result["per_class"]) == set(synthetic.CLASSES)

    images = [os.path.join(data_dir, "val", c, f"{c}_00000.jpg") for c in ("circle", "dots")]
    proc = _module("training.predict", f"--model={model_dir}/model.keras", "--images=" + ",".join(images))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == images[0] and lines[6] == images[1]
    probs = [float(line.split()[0]) for line in lines[1:6]]
    assert probs == sorted(probs, reverse=True) and all(line.split()[1] in synthetic.CLASSES for line in lines[1:6])


def _wait_for_epochs(proc, model_dir, count, timeout=400):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            done = [e["epoch"] for e in _metrics(model_dir)["epochs"]]
        except (OSError, ValueError, KeyError):
            done = []
        if len(done) >= count:
            return done
        time.sleep(0.02)
    raise AssertionError(f"the run ended or stalled before epoch {count} was recorded: {proc.communicate()[0][-3000:]}")


def _snapshot(folder):
    """Every file under `folder` with its size and modification time."""
    return {
        os.path.join(root, n): (os.stat(os.path.join(root, n)).st_size, os.stat(os.path.join(root, n)).st_mtime_ns)
        for root, _, files in os.walk(folder)
        for n in files
    }


def _leftovers(model_dir):
    return [
        os.path.join(root, n)
        for root, dirs, files in os.walk(model_dir)
        for n in files + dirs
        if n.startswith(".") or n.endswith(".tmp") or "_temp" in n
    ]


def _sigint_at_default():
    """Run in the child before exec: a Ctrl-C in a terminal reaches a process whose SIGINT is at its default, but
    a shell without job control (a CI script, `make test &`) starts its children with SIGINT ignored, and Python
    keeps an inherited SIG_IGN, so the signal this test sends would be dropped."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_then_sigkill_then_the_rerun_trains_only_what_is_not_recorded(tmp_path, data_dir):
    """Ctrl-C after epoch 1 is recorded: one line, exit 130, no half-written file. Stop the rerun the moment
    epoch 2 is recorded: the same command started beside it is refused in one line (the folder is locked) and
    writes nothing. SIGKILL it; the third run resumes after epoch 2 and trains epoch 3 only; each epoch is recorded once."""
    model_dir = str(tmp_path / "run")
    args = [
        sys.executable,
        "-m",
        "training.train",
        f"--out={model_dir}",
        f"--data_dir={data_dir}",
        "--epochs=3",
        "--steps_per_epoch=2",
        *TINY,
    ]
    proc = subprocess.Popen(
        args,
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_at_default,
    )
    assert _wait_for_epochs(proc, model_dir, 1) == [1]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted; run the same command again to resume" in err.splitlines() and "Traceback" not in err, err[
        -3000:
    ]
    assert not _leftovers(model_dir)

    proc = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    recorded = _wait_for_epochs(proc, model_dir, 2)
    proc.send_signal(signal.SIGSTOP)  # still running, and holding --out: the same command again is refused
    before = _snapshot(model_dir)
    second = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2 and second.stdout == "", second.stderr[-3000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("error: ")]  # TensorFlow logs aside
    assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert errors[0].startswith(f"error: --out={model_dir}: the folder is in use by pid {proc.pid} on host "), errors
    assert _snapshot(model_dir) == before  # the refused process wrote nothing
    proc.send_signal(signal.SIGKILL)  # SIGKILL releases the lock: the rerun below takes it
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == -signal.SIGKILL and recorded[-1] == 2, out[-3000:]

    again = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stdout and "(after epoch 2)" in again.stdout, again.stdout
    trained = [line.split()[1].rstrip(":") for line in again.stdout.splitlines() if line.startswith("epoch ")]
    assert trained == ["3/3"], again.stdout  # the recorded epochs are not trained again
    assert [e["epoch"] for e in _metrics(model_dir)["epochs"]] == [1, 2, 3]
    assert os.path.exists(os.path.join(model_dir, "model.keras")) and not _leftovers(model_dir)


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _workers(tmp_path, data_dir, model_dirs, *extra):
    addresses = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index, model_dir in enumerate(model_dirs):
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        env = dict(ENV, TF_CONFIG=json.dumps(tf_config))
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "training.train",
                    f"--out={model_dir}",
                    f"--data_dir={data_dir}",
                    "--strategy=multi_worker",
                    "--steps_per_epoch=2",
                    *TINY,
                    *extra,
                ],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def _finish(procs, timeout=500):
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    except subprocess.TimeoutExpired:
        for q in procs:
            q.kill()
        raise
    return outs


def test_a_worker_that_cannot_see_the_shared_model_dir_stops_with_a_clear_error(tmp_path, data_dir):
    procs = _workers(tmp_path, data_dir, [tmp_path / "shared", tmp_path / "elsewhere"], "--epochs=1")
    outs = _finish(procs)
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 2, err[-3000:]
        line = err.strip().splitlines()[-1]
        assert line.startswith("error: --out=") and "worker 1 does not see the run of worker 0" in line, err[-3000:]
    assert not os.path.exists(tmp_path / "shared" / "checkpoints")


def test_two_workers_killed_after_epoch_1_and_restarted_record_each_epoch_once(tmp_path, data_dir):
    """MultiWorkerMirroredStrategy from TF_CONFIG, two real worker processes on loopback and one shared model_dir."""
    model_dir = tmp_path / "shared"
    procs = _workers(tmp_path, data_dir, [model_dir, model_dir], "--epochs=2")
    try:
        assert _wait_for_epochs(procs[0], str(model_dir), 1) == [1]
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
        _finish(procs, timeout=60)
    procs = _workers(tmp_path, data_dir, [model_dir, model_dir], "--epochs=2")
    outs = _finish(procs)
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "resumed from" in outs[0][0] and "(after epoch 1)" in outs[0][0], outs[0][0]
    trained = [line.split()[1].rstrip(":") for line in outs[0][0].splitlines() if line.startswith("epoch ")]
    assert trained == ["2/2"], outs[0][0]
    m = _metrics(str(model_dir))
    assert m["strategy"] == "MultiWorkerMirroredStrategy" and m["num_replicas"] == 2
    assert m["per_replica_batch_size"] == 4 and [e["epoch"] for e in m["epochs"]] == [1, 2]
    assert os.path.exists(model_dir / "model.keras") and not _leftovers(str(model_dir))


def test_bad_folder_stops_before_training(tmp_path):
    root = tmp_path / "bad"
    for split, classes in (("train", ["a", "b"]), ("val", ["a", "c"])):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / split / c / "x.png")
    proc = _module("training.train", "--dataset=folder", f"--data_dir={root}", f"--out={tmp_path / 'run'}", *TINY)
    assert proc.returncode != 0
    assert "different class folders" in proc.stderr and "only in val: ['c']" in proc.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_corrupt_files_are_skipped_and_reported_by_a_run(tmp_path, data_dir):
    """Folder dataset with broken files: the run goes on, and metrics.json names every skipped file."""
    from training import loop
    from training.config import TrainConfig

    root = tmp_path / "ds"
    shutil.copytree(data_dir, root)
    cls = root / "train" / "circle"
    (cls / "zero.jpg").write_bytes(b"")
    (cls / "text.jpg").write_text("not an image")
    good = (cls / "circle_00000.jpg").read_bytes()
    (cls / "truncated.jpg").write_bytes(good[: len(good) // 3])
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(cls / "really_png.jpg", "PNG")
    logs = []
    result = loop.run(
        TrainConfig(
            dataset="folder",
            data_dir=str(root),
            out=str(tmp_path / "run"),
            image_size=32,
            batch_size=8,
            epochs=1,
            steps_per_epoch=1,
            strategy="one_device",
            verbose=0,
            tensorboard=False,
        ),
        log=logs.append,
    )
    skipped = {os.path.basename(s.split(":")[0]) for s in result["skipped"]}
    assert skipped == {"zero.jpg", "text.jpg", "truncated.jpg"}
    assert result["num_train"] == 41  # 40 + the PNG named .jpg
    assert any("skipped 3 file(s)" in line for line in logs)
    assert _metrics(str(tmp_path / "run"))["skipped"] == result["skipped"]


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path, data_dir, monkeypatch):
    from training import epoch, loop, schedule
    from training.config import TrainConfig

    config = TrainConfig(
        data_dir=data_dir,
        out=str(tmp_path / "run"),
        image_size=32,
        batch_size=8,
        steps_per_epoch=2,
        strategy="one_device",
        verbose=0,
        tensorboard=False,
        optimizer="sgd",
        label_smoothing=0.0,
        epochs=3,
        steps_per_loop=1,
    )
    rate = schedule.learning_rate
    # Epoch 2 diverges: the rate jumps to 1e30 from global step 2 (0-based) on.
    monkeypatch.setattr(schedule, "learning_rate", lambda step, **kw: 1e30 if step >= 2 else rate(step, **kw))
    with pytest.raises(epoch.NonFiniteLossError, match=r"at global step \d+ \(epoch 2, step \d\).*global step 2\)"):
        loop.run(config)
    assert [e["epoch"] for e in _metrics(str(tmp_path / "run"))["epochs"]] == [1]
    assert os.path.exists(tmp_path / "run" / "checkpoints" / "ckpt-2.index")


def test_wandb_missing_gives_the_install_hint(tmp_path):
    pytest.importorskip("tensorflow")
    try:
        import wandb  # noqa: F401

        pytest.skip("wandb is installed here")
    except ImportError:
        pass
    from training import loop
    from training.config import TrainConfig

    with pytest.raises(ValueError, match=r"pip install '\.\[wandb\]'"):
        loop.run(TrainConfig(wandb=True, out=str(tmp_path / "run")))


@pytest.mark.slow
def test_progressive_resize_ema_randaugment_and_init_from(tmp_path, data_dir):
    """Two epochs at growing sizes with EMA and RandAugment, started from another run's model.keras (every layer
    from the first step: the fine-tuning recipe refuses EMA)."""
    from keras_effnet import keras_versions
    from training import loop
    from training import model as model_lib
    from training.config import TrainConfig

    keras = keras_versions.keras3()
    common = dict(
        dataset="synthetic",
        data_dir=data_dir,
        synthetic_per_class=4,
        batch_size=8,
        steps_per_epoch=1,
        strategy="one_device",
        verbose=0,
        tensorboard=False,
    )
    first = str(tmp_path / "first")
    loop.run(TrainConfig(out=first, image_size=32, epochs=1, **common))
    source = keras.saving.load_model(os.path.join(first, "model.keras"), safe_mode=True)
    logs = []
    result = loop.run(
        TrainConfig(
            out=str(tmp_path / "second"),
            image_size=40,
            epochs=2,
            progressive_resize=True,
            ema_decay=0.9,
            augment="randaugment",
            init_from=os.path.join(first, "model.keras"),
            finetune="off",
            learning_rate=1e-6,
            **common,
        ),
        log=logs.append,
    )
    assert [e["image_size"] for e in result["epochs"]] == [32, 40]
    assert any("init_from" in line and "copied weights of" in line for line in logs)
    model = keras.saving.load_model(str(tmp_path / "second" / "model.keras"), safe_mode=True)
    assert model.input_shape == (None, 40, 40, 3)
    # started from `first` and barely moved (tiny rate), while a fresh build is far from it
    a = source.get_layer("stem_conv").get_weights()[0]
    b = model.get_layer("stem_conv").get_weights()[0]
    fresh = (
        model_lib.build_model(TrainConfig(image_size=32, drop_connect_rate=0.2).validated(), 10, image_size=32)
        .get_layer("stem_conv")
        .get_weights()[0]
    )
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max() < np.abs(a - fresh).max()
