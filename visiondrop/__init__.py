"""VisionDrop: training-free, visual-only, progressive visual-token reduction (and baselines)."""
