"""prefgen: prompts in, preference pairs (and a reward model) out, on Ray."""

__version__ = "0.1.0"
