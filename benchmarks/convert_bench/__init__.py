"""The conversion benchmark of benchmarks/run.py (issue 6) as a package: contenders, measurements, report, runner.

A contender is one module in `contenders/` exposing `CONTENDERS`; the runner finds it there.
"""
