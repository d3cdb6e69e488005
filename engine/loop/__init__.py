"""The whole loop: generate, score, pairs, encode, train, evaluate, in rounds."""
