"""The stages of the loop, one module each: generate, score, pairs, encode, evaluate, and the loop."""
