"""The study code: `featcache study` (featcache/cli/study_cmd.py) and pipelines/paper.py.

- spec: the `study:` section of a manifest (arms as manifest overrides, seeds, label fractions,
  extra test sets, quick caps).
- ablation: plan_study (every run's manifest, validated up front), run_study, result rows,
  write_outputs (results.csv, table.md, study.png).
- runner: ensure_extracted (every teacher x dataset of a manifest, cache hits when complete) and
  run_cell (train + evaluate one run, reused when finished).
- paper_config, paper: the study file and run_paper.
- stats, tables, plots: seed statistics and paired t-intervals, CSV/markdown writers, the figure.
"""
