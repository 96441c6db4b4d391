"""Benchmarks of deskcast against trx: ``.venv/bin/python bench/latency.py`` etc."""
