"""Flags of `python -m training.study` (issue 5), all optional.

They live in their own `FlagValues`, not absl's global FLAGS, so the study can
import the trainer (whose flags are in training/flags.py, with some of the same
names such as --epochs) in one process without a DuplicateFlagError. Only
`training.study.main` reads them, through `parse` and `StudyConfig`.
"""

from __future__ import annotations

import sys

from absl import flags

FLAGS = flags.FlagValues()

flags.DEFINE_string("out", "study_out", "Study folder S: results.csv/json, report.md, plots, per-step files (resume).", flag_values=FLAGS)
flags.DEFINE_string("phis", "", "Comma-separated phi values of the family. Default: 0..7 (Lite 0..4) with --measure_only, else 0,1,2,3.", flag_values=FLAGS)
flags.DEFINE_enum("family", "efficientnet", ["efficientnet", "lite"], "Family of the phi values.", flag_values=FLAGS)
flags.DEFINE_string("baselines", "resnet50", "Comma-separated baselines trained and measured the same way ('' for none). Allowed: resnet50.", flag_values=FLAGS)
flags.DEFINE_string("formula_phis", "1,2,3", "phi values also built through the literal compound-scaling formula, beside their presets ('' for none).", flag_values=FLAGS)
flags.DEFINE_boolean("measure_only", False, "Skip training; measure cost and latency only.", flag_values=FLAGS)
flags.DEFINE_boolean("grid_search", False, "Run the paper's step 1 instead: train a grid of (alpha, beta, gamma) with alpha*beta^2*gamma^2 ~= 2 at phi=1.", flag_values=FLAGS)
flags.DEFINE_integer("grid_points", 0, "Use only the first N grid points (0 = all); the paper's (1.2, 1.1, 1.15) is first.", flag_values=FLAGS)
flags.DEFINE_string("dataset", "synthetic", "'synthetic' (generated into --data_dir or S/synthetic_data) or 'folder' (--data_dir with train/ and val/ class folders).", flag_values=FLAGS)
flags.DEFINE_string("data_dir", "", "Dataset root (train/<class>/*, val/<class>/*). With --measure_only it is used for int8 calibration only.", flag_values=FLAGS)
flags.DEFINE_integer("epochs", 5, "Training epochs per member.", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 32, "Training batch size.", flag_values=FLAGS)
flags.DEFINE_integer("image_size", 0, "0: every member at its native resolution. N >= 32: B0 at N px and every other member scaled like its native size (B7: N*600/224).", flag_values=FLAGS)
flags.DEFINE_float("learning_rate", 0.0, "Training learning rate (0 = the trainer's default).", flag_values=FLAGS)
flags.DEFINE_integer("measure_classes", 1000, "Classifier classes of untrained (measure-only) models.", flag_values=FLAGS)
flags.DEFINE_integer("throughput_batch", 32, "Keras throughput batch size (capped by --max_batch_gmacs, at least 2).", flag_values=FLAGS)
flags.DEFINE_float("max_batch_gmacs", 40.0, "Cap on GMACs per throughput batch, so B7 at 600 px uses batch 2 on a CPU.", flag_values=FLAGS)
flags.DEFINE_integer("min_reps", 3, "Timed repetitions per latency measurement, at least.", flag_values=FLAGS)
flags.DEFINE_integer("max_reps", 20, "Timed repetitions per latency measurement, at most.", flag_values=FLAGS)
flags.DEFINE_float("budget_s", 5.0, "No new repetition once this many seconds were spent on one measurement (after min_reps).", flag_values=FLAGS)
flags.DEFINE_boolean("tflite", True, "Also convert to TFLite float32 and int8 (post-training) and time them in LiteRT with XNNPACK.", flag_values=FLAGS)
flags.DEFINE_integer("tflite_threads", 0, "LiteRT threads (0 = all cores).", flag_values=FLAGS)
flags.DEFINE_boolean("keep_tflite", False, "Keep the converted .tflite files under S/tflite (they are deleted after timing by default; B7 float32 is 264 MB).", flag_values=FLAGS)
flags.DEFINE_integer("calibration_samples", 8, "Images for int8 calibration (dataset images when there is a dataset, else random pixels).", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the dataset, training and timing inputs.", flag_values=FLAGS)


def parse(argv):
    """absl `flags_parser` for app.run: parse the study's flags, mark absl's global FLAGS as parsed."""
    if any(a in ("-h", "--help", "--helpfull", "-?") for a in argv[1:]):
        print(__doc__.splitlines()[0] + "\n\n" + FLAGS.get_help())
        sys.exit(0)
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    flags.FLAGS.mark_as_parsed()
    return rest
