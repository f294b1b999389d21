"""Offline scorers and submission converters for the LLaVA benchmark suite (one module per benchmark)."""
