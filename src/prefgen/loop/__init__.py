"""Rounds of generation, reward-model training and serving (`prefgen loop`)."""
