"""Benchmarks (not tests): ``python -m tools.bench MODE ...``; each ends with one key=value line."""
