"""What a study does for each member, and where it keeps it: the members, their timed backends, the step and
cell names of the step store, the run and .tflite paths, and the batch and calibration sizes.

`study.run` runs the steps; `study.results` reads them back by the same names.
"""

from __future__ import annotations

import os

from study import members as members_lib
from study.config import StudyConfig

LITERT = {"litert_float32": "float32", "litert_int8": "int8"}


def plan_members(config: StudyConfig) -> list[members_lib.Member]:
    size = config.image_size
    if config.grid_search:
        points = members_lib.grid_points()
        if config.grid_points:
            points = points[: config.grid_points]
        return [
            members_lib.family_member(1, "efficientnet", size, scaling="formula", alpha=a, beta=b, gamma=g, role="grid")
            for a, b, g in points
        ]
    chosen = [members_lib.member(name, size) for name in config.member_names()]
    chosen += [
        members_lib.family_member(p, "efficientnet", size, scaling="formula", role="formula")
        for p in config.formula_phis
    ]
    return chosen


def member_backends(config: StudyConfig, member) -> tuple[str, ...]:
    """The timed backends of a member: all that were asked for; formula twins Keras batch 1 only; grid none."""
    if member.role == "grid":
        return ()
    if member.role == "formula":
        return tuple(b for b in config.backends if b == "keras_b1")
    return config.backends


def step_id(member, what: str) -> str:
    return f"{member.key}__r{member.resolution}__{what}"


def cell_id(member, backend: str) -> str:
    return f"{member.key}@{member.resolution}:{backend}"


def round_id(index: int) -> str:
    return f"round_{index:03d}"


def run_dir(config: StudyConfig, member) -> str:
    return os.path.join(config.out, "runs", f"{member.key}_r{member.resolution}")


def trained_model(config: StudyConfig, member) -> str | None:
    """The member's trained model.keras when the study trained it, else None (an untrained build)."""
    path = os.path.join(run_dir(config, member), "model.keras")
    return path if os.path.exists(path) else None


def tflite_path(config: StudyConfig, member, precision: str) -> str:
    return os.path.join(config.out, "tflite", f"{member.key}_r{member.resolution}_{precision}.tflite")


def throughput_batch(config: StudyConfig, macs: int) -> int:
    """The throughput batch, capped at `max_batch_gmacs` GMACs per batch so big models stay affordable (>= 2)."""
    return max(2, min(config.throughput_batch, int(config.max_batch_gmacs // max(macs / 1e9, 1e-9))))


def calibration_count(config: StudyConfig, macs: int) -> int:
    """Images for int8 calibration: `calibration_samples`, capped like the throughput batch (at least 2).

    Calibration runs the float model in TFLite's reference kernels; B7 at 600 px takes tens of seconds per
    image on a 2-core CPU, and the latency being measured does not depend on how well it is calibrated.
    """
    return max(2, min(config.calibration_samples, int(config.max_batch_gmacs // max(macs / 1e9, 1e-9))))
