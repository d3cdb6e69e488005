"""Leaf I/O: JSON/JSONL records, video files, atomic writes (imports nothing of the engine)."""
