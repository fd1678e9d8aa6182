"""Converting the members to .tflite in worker processes, two at a time, each worker gone after its member.

Conversion, not timing, is most of a measure-only study's wall time: the TFLite converter is single-threaded
(one core of two busy) and B7 alone takes about two minutes on a 2-core CPU. Its memory is the other limit:
converting B7 peaks at several GB, and a process that converted it keeps much of that (the allocator does not
give it back). So two worker processes convert at once, largest members first: one is started afresh for each
member and is the only one that takes the large ones (`LARGE_PARAMS`), so two of the biggest conversions never
add up and each one's memory is given back when its process exits; the other converts the small members one
after another, importing TensorFlow once.

A worker builds the member exactly as the study's own process does: the trained `model.keras` of its run
folder when there is one, else the architecture initialised with the study's seed (the same weights as the
Keras model that is timed). It exports one SavedModel, converts float32, and makes int8 by calibrating that
float32 file (`edge.convert.calibrate_float`: one converter pass, not two). Files are written under a temporary
name and renamed, so a file on disk is complete; the step records are the parent's to write.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import shutil
import tempfile
import time

LARGE_PARAMS = 28_000_000
"""Members with more parameters than this (B5, B6, B7 and bigger) are never converted beside another one."""


@dataclasses.dataclass(frozen=True)
class Job:
    """One member's conversions: what a worker needs, all plain data (it crosses a process boundary)."""

    member: object  # study.members.Member
    precisions: tuple[str, ...]
    paths: dict  # precision -> .tflite path
    trained_model: str | None  # model.keras of the member's training run, if any
    classes: int
    seed: int
    calibration: int  # int8 calibration images
    data_dir: str | None  # calibration images come from here when given, else random pixels
    params: int = 0

    @property
    def large(self) -> bool:
        return self.params > LARGE_PARAMS


def representative_images(member, n: int, data_dir: str | None, seed: int):
    """`n` float32 0..255 calibration images at the member's resolution: dataset images when there is a
    dataset, else random pixels (the latency measured does not depend on how well int8 is calibrated)."""
    if data_dir is not None:
        from training import data

        return data.representative_images(data_dir, n, member.resolution, seed=seed)
    from study import measure

    return measure.random_images(n, member.resolution, seed)


def build_or_load(member, trained_model: str | None, classes: int, seed: int):
    """The member's Keras model: its trained file, else a fresh one with weights fixed by `seed`."""
    from keras_effnet import keras_versions

    keras = keras_versions.keras3()
    if trained_model and os.path.exists(trained_model):
        return keras.models.load_model(trained_model, compile=False)
    from study import members

    keras.utils.set_random_seed(seed)
    return members.build_model(member, classes=classes)


def convert_member(job: Job) -> dict:
    """Run in a worker: every precision of `job`; {precision: {"bytes", "seconds", "calibration_samples"}} and
    the worker's peak resident memory ("peak_rss_gb")."""
    import tensorflow as tf

    unknown = sorted(set(job.precisions) - {"float32", "int8"})
    if unknown:
        raise ValueError(f"precisions must be float32 or int8, got {unknown}")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # in-process (a test calling this directly): TensorFlow already runs
    from common.files import atomic_write
    from edge import convert
    from study import measure

    start = time.perf_counter()
    model = build_or_load(job.member, job.trained_model, job.classes, job.seed)
    directory = tempfile.mkdtemp(prefix="study-savedmodel-")
    out = {}
    try:
        saved = convert.export_saved_model(model, os.path.join(directory, "model"))
        del model
        float_blob = convert.convert_saved_model(saved, "float32", io_dtype="uint8")  # int8 is calibrated on it
        for precision in job.precisions:
            rep, blob = None, float_blob
            if precision == "int8":
                rep = representative_images(job.member, job.calibration, job.data_dir, job.seed)
                blob = convert.quantize_calibrated(convert.calibrate_float(float_blob, rep), io_dtype="uint8")
            atomic_write(job.paths[precision], blob)
            out[precision] = {
                "bytes": os.path.getsize(job.paths[precision]),
                "seconds": time.perf_counter() - start,
                "calibration_samples": None if rep is None else len(rep),
            }
            start = time.perf_counter()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    out["peak_rss_gb"] = measure.peak_rss_gb()
    return out


def order(jobs: list[Job]) -> list[Job]:
    """Largest first, so the longest conversion starts at once and the small ones fill the other core."""
    return sorted(jobs, key=lambda j: -j.params)


FRESH, REUSED = "fresh", "reused"


def slots(workers: int) -> list[str]:
    """One worker started afresh for each member, which alone takes the large ones (so two never run side by
    side, and the memory of each goes back to the system when it exits), and `workers - 1` that convert small
    members one after another (TensorFlow imported once: about 5 s of CPU saved per member)."""
    return [FRESH] + [REUSED] * (max(1, workers) - 1)


def next_job(pending: list[Job], slot: str) -> Job | None:
    """The job a free worker of kind `slot` starts: the first pending one (largest first) it may take."""
    return next((j for j in pending if slot == FRESH or not j.large), None)


def run_jobs(jobs: list[Job], workers: int, on_done) -> None:
    """Convert every job in worker processes (`slots`, `next_job`); call `on_done(job, result)` in this process
    as each finishes. A worker that fails stops the run with its error (the members finished before it stay
    recorded); so does Ctrl-C, which also ends the workers instead of waiting for them."""
    pending = order(jobs)
    if not pending:
        return
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no TensorFlow state forked
    kinds = slots(workers)
    pools = [
        concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=context, max_tasks_per_child=1 if kind == FRESH else None
        )
        for kind in kinds
    ]
    try:
        running: dict[concurrent.futures.Future, tuple[int, Job]] = {}
        while pending or running:
            busy = {i for i, _ in running.values()}
            for i, kind in enumerate(kinds):
                pick = None if i in busy else next_job(pending, kind)
                if pick is not None:
                    pending.remove(pick)
                    running[pools[i].submit(convert_member, pick)] = (i, pick)
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                _, job = running.pop(future)
                try:
                    result = future.result()
                except concurrent.futures.process.BrokenProcessPool:
                    raise RuntimeError(
                        f"converting {job.member.key} ended its worker process (out of memory?); "
                        "run the same command again to continue"
                    ) from None
                on_done(job, result)
    except BaseException:
        # The executor has no public way to stop a running task, and a conversion can take minutes.
        for pool in pools:
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    for pool in pools:
        pool.shutdown()
