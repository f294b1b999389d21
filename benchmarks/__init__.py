"""Efficiency benchmarks: timed generation runs, analytic FLOPs / KV accounting and the report tables."""
