"""sagamesh benchmarks: pytest-benchmark micro benchmarks and the throughput harness."""
