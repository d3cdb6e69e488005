"""The stages of the loop, one module each: generate, score (its metrics in score_metrics), pairs, encode,
evaluate, and the loop."""
