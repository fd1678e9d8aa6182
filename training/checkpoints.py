"""Checkpoint and resume: nothing a run has recorded is ever lost.

A run's model_dir holds `run.json` (the configuration), `checkpoints/`
(`tf.train.CheckpointManager`: model, optimizer, EMA) and `metrics.json` (the
epochs done). The order of writes makes a kill at any moment, SIGKILL
included, safe:

  1. `checkpoints/state-<N>.json`: the history of finished epochs and the
     progress inside the current one (N = global step), written atomically;
  2. `ckpt-<N>`: the variables; the CheckpointManager commits it last, by
     atomically rewriting its `checkpoint` index;
  3. `metrics.json`, only after 1 and 2, so every epoch it lists is in a
     checkpoint.

A rerun restores the newest committed checkpoint and its state file; an
epoch recorded in `metrics.json` is never trained again, and one that was
checkpointed but not yet recorded is recorded from the state file.
Checkpoints inside an epoch (`--checkpoint_every_steps`) hold the step
reached; the resumed run rebuilds that epoch's input pipeline (its order
depends only on the seed and the epoch) and skips the steps done, so it
continues the same data order.

A model_dir holding a run with a different configuration is refused, naming
the fields that differ (`config.RESUMABLE_CHANGES` lists those a rerun may
change, such as the number of epochs or the device count); `--overwrite`
deletes that run's files (and nothing else in the folder) and starts over.

Multi-worker training (MultiWorkerMirroredStrategy): every worker takes part
in every save, but only the chief writes model_dir; the others write to a
temporary folder, as tf.distribute requires. Every worker restores from the
shared model_dir, so the folder must be on a file system all workers see;
`check_workers_agree` stops every worker with a clear error when one of them
does not see the chief's run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import threading

from common.files import atomic_path, write_json
from training import config as config_lib

# TensorFlow is imported inside the functions that use it: training.train (the file names) and
# training.evaluate (run.json) read this module before TensorFlow starts, so a refused command line
# prints its one error line without TensorFlow's start-up logging.

METRICS = "metrics.json"
LABELS = "labels.txt"
MODEL = "model.keras"
CHECKPOINTS = "checkpoints"
RUN = "run.json"
LOGS = "logs"
OUTPUTS = (METRICS, LABELS, MODEL, CHECKPOINTS, RUN, LOGS)


@dataclasses.dataclass
class Progress:
    """What a checkpoint holds besides the variables."""

    epoch: int = 0  # epochs finished
    step: int = 0  # steps done in epoch + 1
    global_step: int = 0
    history: list = dataclasses.field(default_factory=list)
    partial: dict = dataclasses.field(default_factory=dict)  # sums of the unfinished epoch


@contextlib.contextmanager
def deferred_interrupt():
    """Hold back Ctrl-C (SIGINT) while a checkpoint and its records are written; raise it afterwards.

    Every file is written atomically anyway; this keeps TensorFlow's checkpoint writer from leaving its
    temporary shards behind, and a checkpoint from being committed without its metrics.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_metrics(model_dir: str) -> dict:
    return read_json(os.path.join(model_dir, METRICS)) or {"epochs": []}


def save_model(model, path: str) -> None:
    """`model.save` to a temporary .keras file beside `path`, then rename (mode 0644)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def check_model_dir(config, *, chief: bool, log=print) -> int:
    """Refuse a model_dir holding a run with another configuration; with --overwrite, delete that run.

    Returns the run id to write in run.json: the old run's when resuming, a new one otherwise. Only the
    chief deletes; nothing else is written here.
    """
    run = read_json(os.path.join(config.out, RUN))
    old = (run or {}).get("config") or read_metrics(config.out).get("config")
    new_id = random.SystemRandom().randrange(1, 2**31)
    if old is None:
        return new_id
    if config.overwrite:
        if chief:
            for name in OUTPUTS:
                path = os.path.join(config.out, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)
            log(f"--overwrite: deleted the previous run in {config.out}")
        return new_id
    diffs = config_lib.differences(old, config)
    if diffs:
        shown = ", ".join(f"{k} ({old.get(k)!r} there, {getattr(config, k, None)!r} now)" for k in diffs[:6])
        more = f" and {len(diffs) - 6} more" if len(diffs) > 6 else ""
        raise config_lib.ConfigError(
            f"--out={config.out} holds a run with another configuration (differs in: {shown}{more}); "
            "use the same flags to resume it, another --out, or --overwrite to start over"
        )
    return int(run["run_id"]) if run else new_id


def read_run_id(model_dir: str) -> int:
    """The run id in model_dir/run.json, 0 when there is none."""
    run = read_json(os.path.join(model_dir, RUN))
    return int(run["run_id"]) if run else 0


def latest_number(model_dir: str) -> int:
    """The global step of the newest committed checkpoint in model_dir, 0 when there is none."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINTS))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def write_run(model_dir: str, config, run_id: int) -> None:
    write_json(os.path.join(model_dir, RUN), {"run_id": run_id, "config": config_lib.json_config(config)})


class RunCheckpoint:
    """A CheckpointManager plus the state file of each checkpoint, numbered by global step."""

    def __init__(self, checkpoint, *, read_dir: str, write_dir: str, max_to_keep: int = 2):
        import tensorflow as tf

        self.checkpoint = checkpoint
        self.read_dir = os.path.join(read_dir, CHECKPOINTS)
        self.write_dir = os.path.join(write_dir, CHECKPOINTS)
        self.manager = tf.train.CheckpointManager(checkpoint, self.write_dir, max_to_keep=max_to_keep)

    def restore(self) -> Progress | None:
        import tensorflow as tf

        latest = tf.train.latest_checkpoint(self.read_dir)
        if not latest:
            return None
        number = int(latest.rsplit("-", 1)[1])
        state = read_json(os.path.join(self.read_dir, f"state-{number}.json"))
        if state is None:
            raise RuntimeError(
                f"checkpoint {latest} has no state-{number}.json beside it; the checkpoint folder was edited."
            )
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        return Progress(**state)

    def save(self, progress: Progress) -> str:
        """State file first, then the variables; the manager's index commits both."""
        number = progress.global_step
        write_json(os.path.join(self.write_dir, f"state-{number}.json"), dataclasses.asdict(progress))
        path = self.manager.save(checkpoint_number=number)
        kept = {os.path.basename(p) for p in self.manager.checkpoints}
        for name in os.listdir(self.write_dir):
            if name.startswith("state-") and name.endswith(".json") and f"ckpt-{name[6:-5]}" not in kept:
                os.remove(os.path.join(self.write_dir, name))
        return path


def check_workers_agree(strategy, model_dir: str, run_id: int, latest: int) -> None:
    """Multi-worker: stop every worker, with one clear error, unless all see the chief's run in `model_dir`.

    Each worker reports the run id it reads from model_dir/run.json and the
    newest checkpoint it sees there; they must all equal the chief's (worker 0).
    """
    import tensorflow as tf

    def row():
        return tf.constant([[run_id, latest]], tf.int64)

    table = strategy.gather(strategy.run(row), axis=0).numpy()
    per_worker = max(1, len(table) // max(1, _num_workers(strategy)))
    chief = table[0]
    for index, (seen, ckpt) in enumerate(table):
        if seen != chief[0] or ckpt != chief[1]:
            worker = index // per_worker
            raise config_lib.ConfigError(
                f"--out={model_dir}: worker {worker} does not see the run of worker 0 there "
                f"(run id {seen} vs {chief[0]}, newest checkpoint step {ckpt} vs {chief[1]}); every worker must be given "
                "the same --out on a file system they all share, so that each one resumes from the same checkpoint"
            )


def _num_workers(strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    return max(
        1,
        len(resolver.cluster_spec().as_dict().get("worker", []))
        + len(resolver.cluster_spec().as_dict().get("chief", [])),
    )
