"""`keras-effnet-export`: export a keras_effnet model to every TFLite format, with the metadata Android's APIs
read; check each one and say which to ship.

    keras-effnet-export --model=M/model.keras --data_dir=DIR --out=E        # a trained model and its data
    keras-effnet-export --model=M/model.keras --out=E                       # float formats only (no images)
    keras-effnet-export --model=M.keras --labels=imagenet.txt --calibration_dir=IMAGES --out=E

One conversion path serves every format (edge wraps the float model, it does not fork it): float32; float16
weights; dynamic-range int8 weights; full-integer int8 by post-training quantization (PTQ) calibrated on
images; int16x8 (16-bit activations, 8-bit weights); and the QAT model of `edge.qat`. When PTQ int8 loses more
than `MAX_TOP1_DROP_POINTS` top-1 against the float model, `int8_mixed` keeps the fewest layers in float that
bring it back (the layers ranked by TensorFlow's QuantizationDebugger). Results: `E/report.json` and
`E/report.md` (`edge.report`).

This module is the command line only (flags into an `ExportConfig`, one preamble, one library call), as TF
Model Garden keeps `export_tflite.py` apart from `export_tflite_lib.py`. The library: `edge.formats` (the
formats as data), `edge.convert` (conversion and metadata), `edge.evaluate` (LiteRT evaluation and the
recommendation), `edge.inputs` (the model, labels and images), `edge.out_folder` (what the export owns in
--out), `edge.export_config` (the flags) and `edge.session` (one export, format by format).
"""

from __future__ import annotations

import os
import sys

from common import cli
from common import lock as folder_lock
from edge import formats as formats_lib
from edge import inputs as inputs_lib
from edge import out_folder
from edge import session as session_lib
from edge.export_config import ExportConfig, check_config

COMMAND = "keras-effnet-export"


def prepare(config: ExportConfig) -> tuple[inputs_lib.Inputs, list[str]]:
    """The one preamble of `run` and `export_all`, under the output folder's lock: the inputs loaded and checked,
    and what an earlier export left in --out (refusing a folder holding anything else). Raises ValueError or
    FileNotFoundError naming the flag."""
    return inputs_lib.load_inputs(config), out_folder.stale_entries(config.out, config.qat_dir)


def export_all(model_path: str, data_dir: str | None, out_dir: str, **kwargs) -> dict:
    """Write one .tflite per format into `out_dir`, evaluate each, write report.json/report.md; return the report.

    Keywords: the ExportConfig fields (`formats` also as a comma-separated string). Raises ValueError or
    FileNotFoundError, before writing anything, for a missing/corrupt/foreign model, a missing or empty data
    folder, labels that do not match the model, an unknown format, or an `out_dir` holding other files; a
    failure inside one format is recorded in its row instead.
    """
    if "formats" in kwargs:
        kwargs["formats"] = formats_lib.check_formats(kwargs["formats"])
    if "io_dtype" in kwargs:
        formats_lib.check_io_dtype(kwargs["io_dtype"])
    config = ExportConfig(
        model=os.fspath(model_path),
        data_dir=os.fspath(data_dir) if data_dir else None,
        out=os.fspath(out_dir),
        **kwargs,
    )
    with folder_lock.exclusive(config.out, command=COMMAND):
        return session_lib.write_export(config, *prepare(config))


def run(config: ExportConfig) -> int:
    """Check every input, export, print the table; exit code 1 when no format succeeded."""
    check_config(config)
    with folder_lock.exclusive(config.out, command=COMMAND):
        try:
            inputs, stale = prepare(config)
        except (ValueError, FileNotFoundError) as exc:
            raise cli.UsageError(str(exc)) from None
        report = session_lib.write_export(config, inputs, stale)
    print_report(report, config.out)
    outputs = report["formats"] + ([report["saved_model"]] if report.get("saved_model") else [])
    if all(r.get("error") for r in outputs):
        print("error: no format was exported; see the errors above", file=sys.stderr)
        return 1
    return 0


def print_report(report: dict, out_dir: str) -> None:
    """What the command prints: the formats table, the GPU line, the side results and the recommendation."""
    from edge import report as report_lib

    print(report_lib.format_table(report))
    rec = report["recommendation"]
    print(report_lib.gpu_line(report).replace("**", ""))
    if report.get("saved_model"):
        print(report_lib.saved_model_line(report).replace("`", ""))
    if report.get("calibration_audit"):
        print(report["calibration_audit"]["summary"])
    if (report.get("int8_mixed") or {}).get("summary"):
        print(f"\n{formats_lib.MIXED}: {report['int8_mixed']['summary']}")
    print(f"\nrecommendation: {rec.get('file') or '-'}: {rec['reason']}")
    print(f"report: {os.path.join(out_dir, formats_lib.REPORT_MD)}")


def main(argv=None) -> int:
    return cli.main(
        ExportConfig,
        run,
        argv,
        prog=COMMAND,
        description="Export a keras_effnet model to every TFLite format with MediaPipe/Android "
        "metadata, check each on images and say which to ship.",
    )


if __name__ == "__main__":
    cli.run_main(main)
