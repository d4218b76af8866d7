"""Flink job entry points, their configuration and the command line (wiring only)."""
