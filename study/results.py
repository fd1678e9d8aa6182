"""From the step store to results.csv, results.json and report.md.

Every number of a study is a long row (one member, one measurement, one backend) in `results.csv`; the wide
table (one dict per member) is what the report, the plots and the cost model read. Both are rebuilt from
every finished step at the end of each invocation, so an interrupted study loses nothing it finished.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os

from common.files import atomic_write
from study import costmodel, measure, member_training, plots, report, stats, store
from study.config import StudyConfig
from study.plan import LITERT, cell_id, member_backends, round_id, step_id

MEMBER_COLUMNS = (
    "model",
    "key",
    "role",
    "family",
    "phi",
    "fused_stages",
    "scaling",
    "alpha",
    "beta",
    "gamma",
    "resolution",
)
"""What names one member in every row of results.csv and the wide table (`member_columns` fills them)."""


def wide_table(rows: list[dict]) -> list[dict]:
    """Pivot the long rows into one dict per member, in study order; timing cells carry spread and flag."""
    models: dict[str, dict] = {}
    for r in rows:
        m = models.setdefault(
            f"{r['key']}@{r['resolution']}",
            {k: r.get(k) for k in MEMBER_COLUMNS},
        )
        column = report.COLUMNS.get((r["measurement"], r["backend"]))
        if column is None:
            continue
        m[column] = r["value"]
        if r.get("spread") is not None and (column.endswith("_ms") or column == "keras_img_s"):
            m[column + "_spread"] = r.get("spread")
            m[column + "_noisy"] = bool(r.get("noisy"))
        if column == "keras_batch_call_ms":
            m["keras_batch"] = r["batch_size"]
            m["keras_img_ms"] = r["value"] / r["batch_size"]
            m["keras_img_ms_spread"] = r.get("spread")
            m["keras_img_ms_noisy"] = bool(r.get("noisy"))
    return list(models.values())


CSV_COLUMNS = [
    *MEMBER_COLUMNS,
    "measurement",
    "value",
    "unit",
    "backend",
    "batch_size",
    "q1",
    "q3",
    "spread",
    "noisy",
    "rounds",
    "calls",
    "threads",
    "cpu_model",
    "cpu_cores",
    "gpu",
]


def member_columns(m) -> dict:
    base = m.role == "baseline"
    return {
        "model": m.label,
        "key": m.key,
        "role": m.role,
        "family": m.kind,
        "phi": None if base else m.phi,
        "fused_stages": m.fused_stages if m.role == "fused" else None,
        "scaling": None if base else m.scaling,
        "alpha": None if base else m.alpha,
        "beta": None if base else m.beta,
        "gamma": None if base else m.gamma,
        "resolution": m.resolution,
    }


def collect(config: StudyConfig, hw: dict, chosen) -> tuple[list[dict], dict]:
    """The long rows of results.csv, and the timing summary (load, rounds) of the whole study."""
    machine = {"cpu_model": hw["cpu_model"], "cpu_cores": hw["cpu_cores"], "gpu": hw["gpu"]}
    rounds = [store.load_step(config.out, round_id(r)) for r in range(1, config.rounds + 1)]
    rounds = [r for r in rounds if r]
    rows = []
    for m in chosen:
        rows += step_rows(config, m, {**member_columns(m), **machine})
    for m in chosen:
        rows += timing_rows(config, hw, m, {**member_columns(m), **machine}, rounds)
    return rows, timing_summary(rounds)


def step_rows(config: StudyConfig, m, cols: dict) -> list[dict]:
    """A member's rows from its train, cost and convert steps: accuracy, counts, rates and file sizes."""
    out = config.out
    rows = []
    train = store.load_step(out, step_id(m, "train"))
    for r in (train or {}).get("rows", []):
        rows.append({**cols, **r})
    cost = store.load_step(out, step_id(m, "cost"))
    for name, value in cost["cost"].items():
        rows.append({**cols, "measurement": name, "value": value, "unit": "count", "backend": "graph"})
    for name, value in cost["regularisation"].items():
        rows.append({**cols, "measurement": name, "value": value, "unit": "rate", "backend": "graph"})
    for backend in member_backends(config, m):
        if backend in LITERT:
            conv = store.load_step(out, step_id(m, f"convert_{LITERT[backend]}"))
            rows.append(
                {**cols, "measurement": "tflite_bytes", "value": conv["bytes"], "unit": "bytes", "backend": backend}
            )
    return rows


def timing_rows(config: StudyConfig, hw: dict, m, cols: dict, rounds: list[dict]) -> list[dict]:
    """A member's latency (and, in batches, throughput) rows: the median of its cells over the rounds."""
    rows = []
    for backend in member_backends(config, m):
        cid = cell_id(m, backend)
        values = [r["samples"][cid] * 1e3 for r in rounds if cid in r["samples"]]
        if not values:
            continue
        s = stats.summary(values, config.max_spread)
        batch = rounds[-1]["meta"][cid]["batch_size"]
        common = {
            **cols,
            "backend": backend,
            "batch_size": batch,
            "rounds": s["n"],
            "calls": rounds[-1]["calls"][cid],
            "threads": config.thread_count if backend in LITERT else hw["threads"]["tf_intra_op"],
        }
        spread = {"spread": s["spread"], "noisy": s["noisy"]}
        rows.append(
            {**common, "measurement": "latency_ms", "value": s["median"], "unit": "ms", "q1": s["q1"], "q3": s["q3"]}
            | spread
        )
        if backend == "keras_batch":
            rows.append(
                {**common, "measurement": "throughput", "value": batch * 1e3 / s["median"], "unit": "images/s"} | spread
            )
    return rows


def timing_summary(rounds: list[dict]) -> dict:
    if not rounds:
        return {}
    return {
        "rounds": len(rounds),
        "load_before": rounds[0]["load_before"],
        "load_after": rounds[-1]["load_after"],
        "max_load": max(max(r["load_before"] + r["load_after"], default=0) for r in rounds),
        "round_seconds": [r["seconds"] for r in rounds],
        "started": rounds[0]["finished"],
    }


def write_outputs(
    config: StudyConfig, hw: dict, chosen, wall_s: float, tree_peak_gb: float = 0.0, conversion_wall_s: float = 0.0
) -> dict:
    rows, timing = collect(config, hw, chosen)
    table = wide_table(rows)
    steps = store.all_steps(config.out)
    fits = {
        column: costmodel.evaluate([m for m in table if m["role"] in report.COST_MODEL_ROLES], column)
        for column, _ in report.LATENCY_BACKENDS
    }
    results = {
        "hardware": hw,
        "config": dataclasses.asdict(config),
        "command": report.command_line(config),
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "timing": timing,
        "wall_seconds_this_run": wall_s,
        "peak_rss_gb": measure.peak_rss_gb(),
        "peak_memory_gb": max(tree_peak_gb, measure.peak_rss_gb()),
        "conversion": {"wall_seconds": conversion_wall_s, "workers": config.convert_worker_count},
        "step_seconds": {s["step"]: s["seconds"] for s in steps},
        "study_seconds": sum(s["seconds"] for s in steps),
        "recipe": member_training.recipe(config) if not config.measure_only else None,
        "rows": rows,
        "models": table,
        "cost_model": fits,
    }
    if config.compare_with:
        with open(os.path.join(config.compare_with, "results.json")) as f:
            other = json.load(f)
        results["agreement"] = {
            "with": config.compare_with,
            "written": other["written"],
            "backends": stats.agreement(other["models"], table, [c for c, _ in report.LATENCY_BACKENDS]),
        }
    store.write_csv(os.path.join(config.out, "results.csv"), rows, CSV_COLUMNS)
    results["plots"] = plots.write_all(table, fits, config.out)
    store.write_json(os.path.join(config.out, "results.json"), results)
    atomic_write(os.path.join(config.out, "report.md"), report.render(results))
    return results
