"""`python -m study` / `keras-effnet-study`: how efficient is EfficientNet on this machine?"""

from __future__ import annotations

import sys

from common import cli
from study.config import StudyConfig


def run(config: StudyConfig) -> int:
    from study.run import run_study

    results = run_study(config)
    print(f"wrote {config.out}/results.csv, results.json, report.md and {len(results['plots'])} plots", file=sys.stdout)
    return 0


def main(argv=None) -> int:
    return cli.main(
        StudyConfig,
        run,
        argv,
        prog="keras-effnet-study",
        resumable=True,
        description="Measure (and unless --measure_only, train) EfficientNet B0..B7, EfficientNetV2, a "
        "fused-stage sweep and a ResNet-50 baseline on this machine; fit what predicts the time. "
        "Interrupted, the same command resumes.",
    )


if __name__ == "__main__":
    cli.run_main(main)
