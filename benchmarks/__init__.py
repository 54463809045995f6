"""Benchmarks: figures a reader can reproduce, each a ratio or a bound measured in the same run.

Run them all with `bash benchmarks/run` (or `python3 -m benchmarks`); `--quick` for a short run.
They print figures and write benchmarks/results/*.json; they are not pass/fail tests.
"""
