"""Benchmarks behind `tinyward bench …`: each prints figures next to a baseline
measured in the same run.

Nothing in a device or fleet package imports this package.
"""
