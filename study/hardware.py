"""The machine a study ran on: CPU model, cores, GPU, library versions (every figure names its hardware)."""

from __future__ import annotations

import os
import platform

LIBRARIES = ("tensorflow", "keras", "tf_keras", "ai_edge_litert", "numpy", "keras_effnet")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_names() -> list[str]:
    import tensorflow as tf

    names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
    return names


def library_versions() -> dict:
    from importlib import metadata

    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib.replace("_", "-"))
        except metadata.PackageNotFoundError:
            try:
                versions[lib] = metadata.version(lib)
            except metadata.PackageNotFoundError:
                versions[lib] = "not installed"
    return versions


def describe() -> dict:
    """Everything that decides the timings, as plain JSON-able data."""
    gpus = gpu_names()
    return {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "gpu": ", ".join(gpus) if gpus else "none",
        "libraries": library_versions(),
    }


def summary(hw: dict) -> str:
    return f"{hw['cpu_model']} ({hw['cpu_cores']} cores, {hw['machine']}), GPU: {hw['gpu']}"
