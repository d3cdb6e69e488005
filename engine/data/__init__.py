"""Data formats and sources: synthetic scenes, videos, preference shards (model-family agnostic)."""
