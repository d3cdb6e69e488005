"""Tests of the benchmark scripts: each runs end to end at a tiny size and reports sane rows."""
