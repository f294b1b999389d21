"""LLaVA-compatible model package (LLaVA-1.5 / LLaVA-NeXT layouts) on transformers 5.x."""
