"""Throughput harness: sagamesh side by side with the raw broker clients and FastStream."""
