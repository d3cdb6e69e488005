"""Distributed runtime: process groups, attention backends, compile, sequence parallelism, partitioned
loading."""
