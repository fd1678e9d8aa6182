"""Who the other workers are: the cluster of a multi-worker run, from TF_CONFIG or from Slurm.

MultiWorkerMirroredStrategy needs every worker to know the whole cluster and
its own place in it. Two engines users already run set that up:

  * Kubernetes with the Kubeflow training operator: a TFJob sets `TF_CONFIG`
    (`{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}`)
    in each replica (docs/tfjob.yaml);
  * Slurm: `srun` sets `SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`,
    `SLURM_STEP_NODELIST` and `SLURM_STEP_TASKS_PER_NODE` in each task, and
    `tf.distribute.cluster_resolver.SlurmClusterResolver` turns them into a
    cluster: the nodes sorted by name, task k of a node on port
    `port_base + k`.

Either description is checked before TensorFlow connects to anyone: a
worker that sees an incomplete or inconsistent one stops with one line naming
what is missing (`ClusterError`, exit code 2), instead of waiting for peers
that will never come or joining the wrong cluster.
"""

from __future__ import annotations

import json
import os
import re

from common import cli

CLUSTERS = ("auto", "tf_config", "slurm")
DEFAULT_PORT = 8888  # SlurmClusterResolver's port_base
# The variable srun sets in a step, then the one sbatch/salloc sets for the whole job (used outside a step).
SLURM_VARIABLES = {
    "tasks": ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"),
    "nodes": ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST"),
    "tasks_per_node": ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"),
}


class ClusterError(cli.UsageError, ValueError):
    """An incomplete or inconsistent cluster description: one line on the command line (exit 2)."""


def check_tf_config(text: str | None) -> dict:
    """The parsed TF_CONFIG, or ClusterError naming what is missing or inconsistent."""

    def fail(what):
        raise ClusterError(f"TF_CONFIG: expected {what}; got {text!r}")

    if not text:
        fail(
            'the TF_CONFIG environment variable ({"cluster": {"worker": ["host:port", ...]}, "task": '
            '{"type": "worker", "index": i}})'
        )
    try:
        config = json.loads(text)
    except ValueError as e:
        fail(f"JSON ({e})")
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        fail('a "cluster" object')
    cluster = config["cluster"]
    if "ps" in cluster:
        fail('no "ps" jobs (MultiWorkerMirroredStrategy has workers only; parameter servers are another strategy)')
    if not cluster.get("worker") and not cluster.get("chief"):
        fail('a "worker" (or "chief") list in "cluster"')
    seen = {}
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            fail(f'a non-empty list of "host:port" addresses for job {job!r}')
        for address in addresses:
            if not isinstance(address, str) or not re.fullmatch(r"[^\s:]+:\d+|\[[0-9a-fA-F:]+\]:\d+", address):
                fail(f'"host:port" addresses (job {job!r} has {address!r})')
            if address in seen:
                fail(f"each address once ({address} is {seen[address]} and {job})")
            seen[address] = job
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        fail('a "task" object with "type" and "index" (which worker this process is)')
    if task["type"] not in cluster:
        fail(f"a task type that is a job of the cluster ({task['type']!r} is not one of {sorted(cluster)})")
    index = task["index"]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        fail(f"a task index in 0..{len(cluster[task['type']]) - 1} for job {task['type']!r} (got {index!r})")
    return config


def _first(environ, names):
    for name in names:
        if environ.get(name):
            return environ[name]
    return None


def _slurm_module():
    import tensorflow.python.distribute.cluster_resolver.slurm_cluster_resolver as module

    return module


def check_slurm(environ=None) -> dict:
    """{"rank", "tasks", "nodes", "tasks_per_node"} from the Slurm variables, or ClusterError naming the missing
    ones (this process is not a task of an `srun` step) or the inconsistency."""
    environ = os.environ if environ is None else environ
    missing = []
    if not environ.get("SLURM_PROCID"):
        missing.append("SLURM_PROCID")
    values = {}
    for key, names in SLURM_VARIABLES.items():
        values[key] = _first(environ, names)
        if values[key] is None:
            missing.append(" or ".join(names))
    if missing:
        raise ClusterError(
            f"--cluster=slurm: expected the variables srun sets in each task; missing: {', '.join(missing)} "
            "(start the workers with srun, one task per node)"
        )
    module = _slurm_module()
    try:
        rank, tasks = int(environ["SLURM_PROCID"]), int(values["tasks"])
        nodes = module.expand_hostlist(values["nodes"])
        per_node = module.expand_tasks_per_node(values["tasks_per_node"])
    except ValueError as e:
        raise ClusterError(f"--cluster=slurm: expected well-formed Slurm variables ({e})") from None
    if len(nodes) != len(per_node):
        raise ClusterError(
            f"--cluster=slurm: expected a task count for each node ({len(nodes)} nodes "
            f"{values['nodes']!r}, {len(per_node)} counts {values['tasks_per_node']!r})"
        )
    if sum(per_node) != tasks:
        raise ClusterError(
            f"--cluster=slurm: expected the tasks per node ({values['tasks_per_node']!r}) to add up to the "
            f"{tasks} tasks of the step"
        )
    if not 0 <= rank < tasks:
        raise ClusterError(f"--cluster=slurm: expected SLURM_PROCID in 0..{tasks - 1} (got {rank})")
    return {"rank": rank, "tasks": tasks, "nodes": nodes, "tasks_per_node": per_node}


def slurm_resolver(port_base: int = DEFAULT_PORT, environ=None):
    """A SlurmClusterResolver for this task, every value passed explicitly from `check_slurm`.

    On nodes with GPUs, the node's GPUs (CUDA_VISIBLE_DEVICES or nvidia-smi)
    are divided among its tasks and the resolver sets CUDA_VISIBLE_DEVICES;
    one task per node then uses all of them. On CPU nodes it is told one
    "GPU" per task without touching CUDA_VISIBLE_DEVICES: its cluster layout
    pairs each task with a GPU slot and would leave tasks out otherwise.
    """
    import tensorflow as tf

    info = check_slurm(environ)
    layout = dict(zip(info["nodes"], info["tasks_per_node"]))
    most = max(info["tasks_per_node"])
    try:  # CUDA_VISIBLE_DEVICES="" hides every GPU (the resolver would count one)
        gpus = 0 if os.environ.get("CUDA_VISIBLE_DEVICES") == "" else _slurm_module().get_num_gpus()
    except (RuntimeError, OSError):  # no nvidia-smi: a CPU node
        gpus = 0
    if gpus and gpus < most:
        raise ClusterError(
            f"--cluster=slurm: expected at most one task per GPU ({most} tasks on a node with {gpus} GPUs)"
        )
    slots = (
        dict(gpus_per_node=gpus, gpus_per_task=gpus // most, auto_set_gpu=True)
        if gpus
        else dict(gpus_per_node=most, gpus_per_task=1, auto_set_gpu=False)
    )
    return tf.distribute.cluster_resolver.SlurmClusterResolver(
        jobs={"worker": info["tasks"]}, port_base=port_base, tasks_per_node=layout, **slots
    )


def resolve(cluster: str, *, port_base: int = DEFAULT_PORT, environ=None):
    """The cluster resolver for `cluster`, or None for one machine ("auto" without TF_CONFIG)."""
    import tensorflow as tf

    environ = os.environ if environ is None else environ
    if cluster not in CLUSTERS:
        raise ClusterError("cluster", cluster, "one of " + ", ".join(CLUSTERS))
    if cluster == "slurm":
        return slurm_resolver(port_base, environ)
    if cluster == "tf_config" or environ.get("TF_CONFIG"):
        check_tf_config(environ.get("TF_CONFIG"))
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return None


def describe(resolver) -> str:
    """One line: the workers and this task's place among them."""
    spec = resolver.cluster_spec().as_dict()
    workers = [a for job in ("chief", "worker") for a in spec.get(job, [])]
    return f"cluster of {len(workers)} worker(s) {', '.join(workers)}; this is {resolver.task_type} {resolver.task_id}"
