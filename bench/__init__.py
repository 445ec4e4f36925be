"""Benchmarks: cold start, DynamoDB requests per endpoint, login latency. `python -m bench.run_all` runs them all."""
