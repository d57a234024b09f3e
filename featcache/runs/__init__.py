"""The run directory as a format of its own, below both `distill/` (which writes runs) and
`evaluate/` (which reads them), as `store/` sits below `extract/` and `distill/`.

  layout.py      where a run keeps its files (the one module that spells their names)
  checkpoint.py  the typed checkpoint and its file format
  compat.py      the ordered table of steps that bring older checkpoints to today's form
  logs.py        the per-epoch CSV logs
  guard.py       a run directory never lies inside a feature store
  run.py         `Run`: all of the above for one directory

The student network that the checkpoints hold lives beside this package, in `featcache.student`.
"""

from featcache.runs.checkpoint import FORMAT, Checkpoint, Pretrained, TrainingState
from featcache.runs.guard import check_folder, check_run_dir
from featcache.runs.layout import WHICH, RunLayout, ScoredFolder
from featcache.runs.run import Run

__all__ = ["FORMAT", "WHICH", "Checkpoint", "Pretrained", "Run", "RunLayout", "ScoredFolder",
           "TrainingState", "check_folder", "check_run_dir"]
