"""Benchmarks: each case in a fresh process, contenders side by side, median and spread reported.

`pointstn.bench.runner.run` drives suites (`SUITES`); `pointstn.bench.worker` is the child process
that times one contender on one case; `pointstn.bench.chamfer` is the Chamfer suite.
"""
