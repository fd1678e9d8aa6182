"""The one place that picks a tf.distribute strategy.

`get_strategy("auto")` gives MirroredStrategy over every visible GPU, and falls
back to the CPU so the same trainer runs in CI. `cpu_replicas=N` splits the
CPU into N logical devices (tf.config.set_logical_device_configuration), so
MirroredStrategy with N replicas runs and is tested on a machine without GPUs.
"multi_worker" is MultiWorkerMirroredStrategy over the cluster that
`training.cluster` resolves: TF_CONFIG (a Kubernetes TFJob, or set by hand)
or Slurm's variables (`cluster="slurm"`), one process per machine.
"""

from __future__ import annotations

from training import cluster as cluster_lib

STRATEGIES = ("auto", "mirrored", "one_device", "multi_worker")


def configure_cpu_replicas(cpu_replicas: int) -> int:
    """Split the first CPU into `cpu_replicas` logical devices; returns how many logical CPUs exist.

    TensorFlow allows this only before it initialises its devices, so it must
    run before any op; a second call asking for more devices than exist fails
    with a clear error, one asking for fewer reuses the first ones.
    """
    import tensorflow as tf

    if isinstance(cpu_replicas, bool) or not isinstance(cpu_replicas, int) or cpu_replicas < 1:
        raise ValueError(f"cpu_replicas must be an integer >= 1, got {cpu_replicas!r}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if cpu_replicas > 1 and not current:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
        except RuntimeError:
            pass  # already initialised: checked below
    have = len(tf.config.list_logical_devices("CPU"))
    if have < cpu_replicas:
        raise ValueError(
            f"cpu_replicas={cpu_replicas} but TensorFlow was already initialised with {have} logical CPU device(s) "
            "in this process; choose cpu_replicas before TensorFlow runs any op (a fresh process)."
        )
    return have


def get_strategy(
    name: str = "auto",
    *,
    num_gpus: int | None = None,
    cpu_replicas: int = 1,
    cluster: str = "auto",
    port_base: int = cluster_lib.DEFAULT_PORT,
):
    """A tf.distribute.Strategy by name: "auto", "mirrored", "one_device" or "multi_worker".

    auto: MirroredStrategy on the GPUs if there are any, else MirroredStrategy
    on `cpu_replicas` logical CPUs when that is > 1, else OneDeviceStrategy on
    the CPU. `num_gpus` limits the GPUs used (default: all). `cluster` ("auto":
    TF_CONFIG when set, "tf_config", "slurm") describes the workers of
    "multi_worker"; "slurm" makes "auto" mean "multi_worker".
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}.")
    if num_gpus is not None and (isinstance(num_gpus, bool) or not isinstance(num_gpus, int) or num_gpus < 0):
        raise ValueError(f"num_gpus must be None (all) or an integer >= 0, got {num_gpus!r}.")
    if cluster != "auto" and name == "auto":
        name = "multi_worker"
    if cluster != "auto" and name != "multi_worker":
        raise cluster_lib.ClusterError(
            "cluster", cluster, f"auto with --strategy={name} (a cluster is for multi_worker)"
        )
    if name == "multi_worker":
        resolver = cluster_lib.resolve("tf_config" if cluster == "auto" else cluster, port_base=port_base)
        if cpu_replicas > 1:
            configure_cpu_replicas(cpu_replicas)
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)

    gpus = tf.config.list_physical_devices("GPU")
    if num_gpus is not None:
        if num_gpus > len(gpus):
            raise ValueError(f"num_gpus={num_gpus} but only {len(gpus)} GPU(s) are visible.")
        gpus = gpus[:num_gpus]
    if gpus:
        devices = [f"/gpu:{i}" for i in range(len(gpus))]
    else:
        configure_cpu_replicas(cpu_replicas)
        devices = [d.name for d in tf.config.list_logical_devices("CPU")[:cpu_replicas]]
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(devices[0])
    if name == "auto" and len(devices) == 1:
        return tf.distribute.OneDeviceStrategy(devices[0])
    return tf.distribute.MirroredStrategy(devices=devices)


def is_chief(strategy) -> bool:
    """True for the worker that writes model_dir: the only worker of a single-machine strategy, or worker 0 (or "chief")."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and int(resolver.task_id) == 0 and "chief" not in cluster


def num_workers(strategy) -> int:
    """Worker processes taking part (1 for a single-machine strategy)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, len(spec.get("worker", [])) + len(spec.get("chief", [])))


def run_key(strategy) -> str:
    """The cluster a multi-worker run is made of (its sorted task addresses), "" for a single process.

    Workers of one run share `--out`: the chief's folder lock records this key and the other workers check it.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return ""
    cluster = resolver.cluster_spec().as_dict()
    return ",".join(
        sorted(
            str(address)
            for tasks in cluster.values()
            for address in (tasks.values() if isinstance(tasks, dict) else tasks)
        )
    )


def strategy_name(strategy) -> str:
    """The public name: MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy inside TensorFlow."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__
