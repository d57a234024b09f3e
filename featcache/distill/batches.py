"""What the training process does to a batch of items (data.py) before a step, batched, on the
training device: the photometric augmentation of the student's input, the mask as float, and for
every tap the teacher's target and validity on its loss grid, normalised and resampled from the
stored maps the loader workers handed over (resample.py), or gathered from the targets held in
memory (resident.py).

Workers only decode and move what is cheap (the image at the student's size, a uint8 mask, the
stored float16 maps); per-sample work on one CPU core each was the loader's limit (issue 35).
Targets leave here in float16 whichever way they were made, as they always crossed the process
boundary: a run's numbers do not depend on whether features were resident.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from featcache.data.photometric import augment, draw
from featcache.distill.data import DistillItems
from featcache.distill.resample import teacher_targets


class Finish:
    """finish(batch) -> the batch a step consumes: "image" (augmented when the items are),
    float "mask", and per tap "t:KEY" (float16) and "v:KEY" on `device`; the stored maps and boxes
    ("f:", "b:") are gone, the bookkeeping ("epoch", "item", ...) stays on the host."""

    def __init__(self, items: DistillItems, device: torch.device) -> None:
        self.items, self.device = items, device
        self.norms = {key: None if norm is None else tuple(torch.from_numpy(a).to(device) for a in norm)
                      for key, norm in items.norm.items()}

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        nb = self.device.type == "cuda"  # pinned by the loader: copies overlap the previous step
        out = {k: v for k, v in batch.items() if not k.startswith(("f:", "b:"))}
        image = batch["image"].to(self.device, non_blocking=nb)
        spec = self.items.augment
        if spec is not None:
            seeds = zip(batch["epoch"].tolist(), batch["item"].tolist(), strict=True)
            shape = tuple(image.shape[1:])
            image = augment(image, [draw(spec, np.random.default_rng([self.items.seed, e, k]), shape)
                                    for e, k in seeds])
        out["image"] = image
        out["mask"] = batch["mask"].to(self.device, non_blocking=nb).float()
        if self.items.with_teachers:
            out.update(self.targets(batch))
        return out

    def targets(self, batch: dict[str, Any], only: list[str] | None = None) -> dict[str, torch.Tensor]:
        """"t:KEY" and "v:KEY" of every tap (of the teachers `only`, if given): gathered from the
        resident targets, or made from the batch's stored maps."""
        out = {}
        resident = self.items.resident
        for (teacher, level), taps in self.items.taps.items():
            if only is not None and teacher not in only:
                continue
            if resident is not None and teacher in self.items.resident_teachers:
                for t in taps:
                    out[f"t:{t.key}"], out[f"v:{t.key}"] = resident.gather(t.key, batch["item"], self.device)
                continue
            nb = self.device.type == "cuda"
            feature = batch[f"f:{teacher}/{level}"].to(self.device, non_blocking=nb).float()
            for t in taps:
                target, valid = self._resampled(feature, batch[f"b:{teacher}"], batch["dataset"],
                                                teacher, level, t.loss_grid)
                out[f"t:{t.key}"], out[f"v:{t.key}"] = target.half(), valid
        return out

    def _resampled(self, feature: torch.Tensor, boxes: torch.Tensor, sources: torch.Tensor, teacher: str,
                   level: str, grid: tuple[int, int] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """teacher_targets with each row normalised by its own dataset's entry statistics."""
        present = sorted(set(sources.tolist()))
        if len(present) == 1:
            return teacher_targets(feature, self.norms[(present[0], teacher, level)], boxes, grid)
        parts = {}
        for s in present:
            rows = torch.nonzero(sources == s)[:, 0]
            parts[s] = (rows, *teacher_targets(feature[rows.to(feature.device)],
                                               self.norms[(s, teacher, level)], boxes[rows], grid))
        first = next(iter(parts.values()))
        targets = first[1].new_empty(len(sources), *first[1].shape[1:])
        valid = first[2].new_empty(len(sources), *first[2].shape[1:])
        for rows, target, ok in parts.values():
            targets[rows.to(targets.device)] = target
            valid[rows.to(valid.device)] = ok
        return targets, valid
