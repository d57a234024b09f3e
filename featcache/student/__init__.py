"""The student network: what is trained, saved in a run, evaluated, served and exported.

It sits below both `distill/` (which trains it) and `evaluate/` (which runs it), beside `runs/`
(which saves and loads it), so that serving a trained student never imports the training code:
the same reason `store/` sits below `extract/` and `distill/`. `network.py` is the nn.Module and
its input adapter; `encoder_weights.py` the pretrained encoder weights it may start from.
"""

from featcache.student.network import Student, count_params, resolve_normalisation, student_input

__all__ = ["Student", "count_params", "resolve_normalisation", "student_input"]
