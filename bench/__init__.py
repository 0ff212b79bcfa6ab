"""Reproducible load tests: lbproxy against HAProxy, nginx and a naive aiohttp proxy.

Run a benchmark as a module from the repository root, e.g. `python -m bench.throughput --quick`.
Results are written under bench/results/.
"""
