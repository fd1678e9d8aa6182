"""Building blocks of `python -m training.study` (issue 5): members, measurements, storage, plots, report.

Each module is plain functions over plain data, so tests call them directly;
only `training.study.main` reads flags.
"""
