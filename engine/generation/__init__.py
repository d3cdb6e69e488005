"""The VideoGPA loop around the trainer: candidate generation, preference pairs, evaluation."""
