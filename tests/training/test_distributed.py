"""Multi-worker launches as Slurm and a Kubernetes TFJob make them, on loopback: real worker processes of
`python -m training.train` reading TFRecord shards, each recording the example ids its input pipeline reads.

Slurm: the variables `srun` sets for a two-task step (here both tasks on one node, `localhost`, so the resolver gives
them consecutive ports). TFJob: the TF_CONFIG the training operator derives from docs/tfjob.yaml, with the
pod addresses replaced by loopback ones. Incomplete clusters are refused in one process each.
"""

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from training import make_shards, synthetic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
TINY = ["--image_size=32", "--batch_size=8", "--verbose=2", "--tensorboard=false"]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    """40 train images in 4 shards of 10 (split by file over 2 workers), 10 val images in 1 shard (by data)."""
    root = tmp_path_factory.mktemp("distributed")
    folder = synthetic.generate(str(root / "folder"), train_per_class=4, val_per_class=1, image_size=64, seed=0)
    out = str(root / "shards")
    make_shards.write_shards(
        make_shards.ShardsConfig(data_dir=folder, out=out, train_shards=4, val_shards=1), log=lambda *a: None
    )
    return out


def _free_port_pair():
    """A port p with p and p + 1 both free (Slurm's resolver gives the tasks of a node consecutive ports)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def _slurm_env(rank, tasks=2):
    # What srun sets in each task of `srun --nodes=1 --ntasks=2` on node "localhost" (and sbatch for the job).
    env = {k: v for k, v in ENV.items() if not k.startswith("SLURM_") and k != "TF_CONFIG"}
    env.update(
        SLURM_PROCID=str(rank),
        SLURM_LOCALID=str(rank),
        SLURM_NODEID="0",
        SLURM_STEP_NUM_TASKS=str(tasks),
        SLURM_NTASKS=str(tasks),
        SLURM_STEP_NODELIST="localhost",
        SLURM_JOB_NODELIST="localhost",
        SLURM_STEP_TASKS_PER_NODE=str(tasks),
        SLURM_TASKS_PER_NODE=str(tasks),
        SLURM_NNODES="1",
    )
    return env


def _launch(envs, args):
    return [
        subprocess.Popen(
            [sys.executable, "-m", "training.train", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in envs
    ]


def _finish(procs, timeout=500):
    try:
        return [p.communicate(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise


def _recorded(ids_dir):
    """{(worker, epoch, step): set of ids} from every run's lines; a step recorded twice must hold the same ids."""
    seen = collections.defaultdict(list)
    for worker in (0, 1):
        path = os.path.join(ids_dir, f"worker-{worker}.txt")
        for line in open(path) if os.path.exists(path) else []:
            epoch, step, example = line.split()
            seen[(worker, int(epoch), int(step))].append(example)
    return seen


def _epochs_done(model_dir):
    try:
        with open(os.path.join(model_dir, "metrics.json")) as f:
            return [e["epoch"] for e in json.load(f)["epochs"]]
    except (OSError, ValueError, KeyError):
        return []


def _check_each_example_once(seen, epoch, steps, expected):
    per_worker = []
    for worker in (0, 1):
        ids = [i for step in range(steps) for i in seen[(worker, epoch, step)]]
        assert len(ids) == len(set(ids)), f"worker {worker} read an example twice in epoch {epoch}"
        per_worker.append(set(ids))
    assert per_worker[0] | per_worker[1] == expected and not per_worker[0] & per_worker[1], epoch


@pytest.mark.parametrize("kill", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["one_epoch", "kill_restart"])
def test_slurm_two_workers_read_each_example_once_per_epoch_and_a_restart_after_a_kill_keeps_it(
    kill, tmp_path, shard_dir
):
    """srun's variables -> SlurmClusterResolver -> MultiWorkerMirroredStrategy with 2 workers; 4 shards split by file.
    In each epoch the ids the two workers read are the whole train set, disjoint. kill_restart (slow: two launches):
    both workers are killed once epoch 1 is recorded; the rerun trains epoch 2 only, and a step read by both runs
    (read-ahead before the kill) holds the same examples in both."""
    from training import shards

    expected = {f"train/{c}/{c}_{i:05d}.jpg" for c in synthetic.CLASSES for i in range(4)}
    model_dir, ids_dir = str(tmp_path / "run"), str(tmp_path / "ids")
    epochs = 2 if kill else 1
    port = _free_port_pair()
    args = [
        f"--data_dir={shard_dir}",
        f"--out={model_dir}",
        "--cluster=slurm",
        f"--cluster_port={port}",
        f"--record_ids={ids_dir}",
        f"--epochs={epochs}",
        *TINY,
    ]
    procs = _launch([_slurm_env(r) for r in (0, 1)], args)
    if kill:
        try:
            deadline = time.time() + 400
            while not _epochs_done(model_dir) and time.time() < deadline and all(p.poll() is None for p in procs):
                time.sleep(0.05)
            assert _epochs_done(model_dir) == [1], [p.communicate(timeout=60) for p in procs if p.poll() is not None]
        finally:
            for p in procs:
                p.send_signal(signal.SIGKILL)
            _finish(procs, timeout=60)
        procs = _launch([_slurm_env(r) for r in (0, 1)], args)
    outs = _finish(procs)
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    chief = outs[0][0]
    trained = [line.split()[1] for line in chief.splitlines() if line.startswith("epoch ")]
    if kill:
        assert "resumed from" in chief and "(after epoch 1)" in chief and trained == ["2/2:"], chief
    else:
        assert trained == ["1/1:"] and "cluster of 2 worker(s) localhost:" in chief, chief
    assert "train: split over 2 workers by file (4 shards" in chief and "20, 20 examples each" in chief, chief
    assert "val: split over 2 workers by data (1 shard(s)" in chief, chief
    with open(os.path.join(model_dir, "metrics.json")) as f:
        m = json.load(f)
    assert m["strategy"] == "MultiWorkerMirroredStrategy" and m["num_replicas"] == 2 and m["steps_per_epoch"] == 5
    assert [e["epoch"] for e in m["epochs"]] == list(range(1, epochs + 1)) and m["num_train"] == 40
    assert m["num_val"] == 10 and m["final"]["val_accuracy"] >= 0
    steps = shards.steps_per_epoch(shards.load_shards(shard_dir).train_files, 8, 2)
    seen = _recorded(ids_dir)
    for key, lines in seen.items():
        # one batch of 4 per step, or the same batch read again by the rerun
        assert len(lines) in (4, 8) and len(set(lines)) == 4, (key, lines)
    seen = collections.defaultdict(set, {k: set(v) for k, v in seen.items()})
    for epoch in range(1, epochs + 1):
        _check_each_example_once(seen, epoch, steps, expected)


# ---------------------------------------------------------------- Kubernetes TFJob


def _yaml(text):
    """The block-style YAML subset docs/tfjob.yaml is written in (maps, lists, scalars), without PyYAML."""
    lines = [
        (len(raw) - len(raw.lstrip()), raw.strip())
        for raw in text.splitlines()
        if raw.strip() and not raw.strip().startswith("#")
    ]

    def scalar(value):
        return int(value) if re.fullmatch(r"-?\d+", value) else value.strip("'\"")

    def block(i, indent):
        if lines[i][1].startswith("- "):
            items = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                rest = lines[i][1][2:]
                if ":" in rest and not rest.startswith("--"):
                    lines[i] = (indent + 2, rest)
                    value, i = block(i, indent + 2)
                else:
                    value, i = scalar(rest), i + 1
                items.append(value)
            return items, i
        mapping = {}
        while i < len(lines) and lines[i][0] == indent and not lines[i][1].startswith("- "):
            key, _, value = lines[i][1].partition(":")
            if value.strip():
                mapping[key] = scalar(value.strip())
                i += 1
            else:
                mapping[key], i = block(i + 1, lines[i + 1][0])
        return mapping, i

    return block(0, 0)[0]


def operator_tf_config(manifest: dict, index: int, addresses=None) -> str:
    """TF_CONFIG as the training operator sets it in worker `index`: `<name>-worker-<i>.<namespace>.svc:<port>`,
    or `addresses` in their place."""
    spec = manifest["spec"]["tfReplicaSpecs"]["Worker"]
    container = spec["template"]["spec"]["containers"][0]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "tfjob-port")
    name = manifest["metadata"]["name"]
    workers = addresses or [f"{name}-worker-{i}.default.svc:{port}" for i in range(spec["replicas"])]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def test_the_tfjob_manifest_launches_two_workers_on_its_tf_config(tmp_path, shard_dir):
    """docs/tfjob.yaml's command parses as the trainer's flags, and its TF_CONFIG (pod names swapped for loopback
    addresses) starts MultiWorkerMirroredStrategy over both workers, which read disjoint halves of the train set."""
    from common import cli
    from training import cluster
    from training.config import TrainConfig

    with open(os.path.join(REPO, "docs", "tfjob.yaml")) as f:
        manifest = _yaml(f.read())
    assert manifest["kind"] == "TFJob" and manifest["apiVersion"] == "kubeflow.org/v1"
    spec = manifest["spec"]["tfReplicaSpecs"]["Worker"]
    container = spec["template"]["spec"]["containers"][0]
    assert spec["replicas"] == 2 and container["name"] == "tensorflow"  # the operator finds TensorFlow by this name
    command = container["command"]
    assert command[:3] == ["python", "-m", "training.train"]
    config = cli.parse(TrainConfig, command[3:], prog="t", description="").validated()
    assert config.cluster == "tf_config"
    cluster.check_tf_config(operator_tf_config(manifest, 1))

    port = _free_port_pair()
    loopback = [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"]
    ids_dir = str(tmp_path / "ids")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROBE, shard_dir, ids_dir],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(ENV, TF_CONFIG=operator_tf_config(manifest, i, loopback)),
        )
        for i in (0, 1)
    ]
    outs = _finish(procs)
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        result = json.loads(out.strip().splitlines()[-1])
        # each step all-reduces the batch sizes of both workers: 5 steps of 8 = the 40 train images; evaluation
        # (1 shard split by data, a last batch smaller than the others) counts each of the 10 val images once
        assert result == {"replicas": 2, "steps": 5, "examples": 40, "plan": "file", "val_examples": 10}, result
    seen = collections.defaultdict(set, {k: set(v) for k, v in _recorded(ids_dir).items()})
    _check_each_example_once(seen, 1, 5, {f"train/{c}/{c}_{i:05d}.jpg" for c in synthetic.CLASSES for i in range(4)})


# One worker of the manifest's cluster, without the model (the Slurm test above runs the trainer): the strategy from
# TF_CONFIG, the shard pipeline of training.shards, one epoch of steps that each all-reduce across the workers,
# then one pass over the validation shards.
PROBE = """
import json, sys
import tensorflow as tf
from training import shards, strategy as strategy_lib
data_dir, ids_dir = sys.argv[1:3]
strategy = strategy_lib.get_strategy("auto", cluster="tf_config")
train = shards.load_shards(data_dir).train_files
workers = strategy_lib.num_workers(strategy)
steps = shards.steps_per_epoch(train, 8, workers)
batches = iter(shards.distribute(strategy, train, global_batch=8, record_ids=ids_dir, image_size=16, training=True,
                                 repeat=True))
count = tf.function(lambda labels: strategy.reduce(
    "SUM", strategy.run(lambda y: tf.shape(y)[0], args=(labels,)), axis=None))
examples = sum(int(count(next(batches)[1])) for _ in range(steps))
val = shards.load_shards(data_dir).val_files
val_examples = sum(int(count(labels)) for _, labels in
                   shards.distribute(strategy, val, global_batch=8, image_size=16, training=False))
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "steps": steps, "examples": examples,
                  "plan": shards.split_plan(train, workers).by, "val_examples": val_examples}))
"""


# ---------------------------------------------------------------- incomplete clusters, in one process each


@pytest.mark.parametrize(
    "variables, fragment",
    [
        ({"SLURM_PROCID": None}, "missing: SLURM_PROCID"),
        (
            {"SLURM_STEP_NODELIST": None, "SLURM_JOB_NODELIST": None},
            "missing: SLURM_STEP_NODELIST or SLURM_JOB_NODELIST",
        ),
        ({"SLURM_STEP_TASKS_PER_NODE": "1", "SLURM_TASKS_PER_NODE": "1"}, "to add up to the 2 tasks"),
        ({"SLURM_STEP_NODELIST": "node[1-3]"}, "a task count for each node (3 nodes"),
        ({"SLURM_PROCID": "2"}, "SLURM_PROCID in 0..1 (got 2)"),
    ],
)
def test_an_incomplete_slurm_step_stops_the_worker_in_one_line_before_any_step(
    variables, fragment, tmp_path, monkeypatch, capsys
):
    from training import train

    for name, value in {**_slurm_env(0), **variables}.items():
        if name.startswith("SLURM_"):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
    code = train.main(["--cluster=slurm", f"--out={tmp_path / 'run'}", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        code == 2 and len(err) == 1 and err[0].startswith("error: --cluster=slurm: expected") and fragment in err[0]
    ), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "tf_config, fragment",
    [
        ('{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}}', '"task" object with "type" and "index"'),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}', "task index in 0..0"),
        ('{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}', '"host:port" addresses'),
        ('{"cluster": {"worker": ["h:1", "h:1"]}, "task": {"type": "worker", "index": 0}}', "each address once"),
        ('{"cluster": {"chief": ["h:1"]}, "task": {"type": "worker", "index": 0}}', "'worker' is not one of ['chief']"),
        ('{"cluster": {"worker": ["h:1"], "ps": ["h:2"]}, "task": {"type": "worker", "index": 0}}', 'no "ps" jobs'),
        ("", "the TF_CONFIG environment variable"),
    ],
)
def test_an_incomplete_tf_config_stops_the_worker_in_one_line(tf_config, fragment, tmp_path, monkeypatch, capsys):
    from training import train

    monkeypatch.setenv("TF_CONFIG", tf_config)
    code = train.main(["--cluster=tf_config", f"--out={tmp_path / 'run'}", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: TF_CONFIG: expected") and fragment in err[0], err
    assert not (tmp_path / "run").exists()


def test_slurm_variables_become_the_cluster_the_resolver_gives(monkeypatch):
    """Two nodes of two tasks each: nodes in name order, each node's tasks on consecutive ports; on a CPU node
    CUDA_VISIBLE_DEVICES is left alone."""
    from training import cluster

    env = dict(_slurm_env(3, tasks=4), SLURM_STEP_NODELIST="gpu[07-08]", SLURM_STEP_TASKS_PER_NODE="2(x2)")
    for k, v in env.items():
        if k.startswith("SLURM_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    resolver = cluster.slurm_resolver(port_base=9000)
    assert resolver.cluster_spec().as_dict() == {"worker": ["gpu07:9000", "gpu07:9001", "gpu08:9000", "gpu08:9001"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 3) and os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert cluster.describe(resolver).endswith("this is worker 3")
