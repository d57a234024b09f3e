"""Output distillation that adapts to its teacher's quality: a probe teaches only while it is
better than its student.

A task-adapted probe fitted on a few labelled images can be much worse than the student it
teaches: on a target that needs context (one hemisphere's grey matter, which a per-pixel probe
cannot tell from its mirror image) the probe's soft labels teach the student the probe's mistakes.
Both are scored on the same validation split at the mask's resolution (the probe once, after its
fit: output_kd.probe_scores; the student at every validation), so the trust in a probe is how much
better it is than the student now:

    trust = clip((probe score - student score) / margin, 0, 1)

1 while the probe leads by at least `margin`, 0 once the student is as good. A strong probe keeps
teaching until the student has caught up with it; a weak one stops as soon as the student passes
it. The student's score is its best validation so far (the first steps, before one, trust every
probe: an untrained student is worse than any probe worth the name), so trust only falls. With
the latest validation instead, one bad validation of a student that had passed its probe handed it
back to that probe, which then held it down: on the left-hemisphere benchmark (seed 1,
2026-12-07) the student's validation Dice fell from 0.886 to 0.382 in one epoch, the probe (0.61)
was trusted again from the next, and the student stayed near 0.31 for the ten epochs after.
"""

from __future__ import annotations

import math

import torch


def trust(probe_scores: torch.Tensor, student_score: float, margin: float) -> torch.Tensor:
    """Per probe, its weight in the output term (same shape as probe_scores): a probe without a
    score (NaN) gets 0."""
    if not math.isfinite(student_score):
        return torch.ones_like(probe_scores)
    lead = (probe_scores - student_score) / margin
    return torch.nan_to_num(lead, nan=0.0).clamp(0.0, 1.0)
