"""Reusable parts of the study pipelines (pipelines/ablation.py, pipelines/paper.py).

- runner: ensure_extracted (every teacher x dataset of a manifest, cache hits when complete) and
  run_cell (train + evaluate one run, reused when finished).
- ablation: the six configurations, AblationSettings, plan / run_ablation.
- paper_config, paper: the study file and run_paper.
- stats, tables, plots, display: seed statistics and the step rule, CSV/markdown/LaTeX writers,
  the ablation figure, rich progress.
"""
