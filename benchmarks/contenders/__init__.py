"""Baselines plugged into `autotransfer bench` as command-line contenders (see docs/bench.md)."""
