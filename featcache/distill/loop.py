"""The one optimizer step both training phases take (validation is validation.py).

`optimizer_step` is the loop's body, written out as nanoGPT's is: batch to the device, forward
(under bf16 autocast on a GPU when asked), backward, clip, step, schedule. Labelled training and
feature pretraining (labelled=False: the masks are not read) both call it, with their own
optimizer and schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class StepSettings:
    device: torch.device
    amp: bool  # bf16 autocast (CUDA only)
    grad_clip: float  # 0 = off

    @classmethod
    def of(cls, training: Any, device: torch.device) -> StepSettings:
        return cls(device, training.amp and device.type == "cuda", training.grad_clip)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A loader batch on `device`: teacher targets ("t:KEY") as float32, their validity ("v:KEY")."""
    nb = device.type == "cuda"  # pinned by the loader: copy while the previous step runs
    teacher = {k[2:]: v.to(device, non_blocking=nb).float() for k, v in batch.items() if k.startswith("t:")}
    valid = {k[2:]: v.to(device, non_blocking=nb) for k, v in batch.items() if k.startswith("v:")}
    has_mask = batch.get("has_mask")
    return {"image": batch["image"].to(device, non_blocking=nb),
            "mask": batch["mask"].to(device, non_blocking=nb), "dataset": batch["dataset"].to(device),
            "label": batch["label"].to(device), "index": batch["index"],
            "has_mask": None if has_mask is None or bool(has_mask.all()) else has_mask.to(device),
            "teacher": teacher, "valid": valid}


def optimizer_step(model: torch.nn.Module, batch: dict[str, Any], optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler, settings: StepSettings,
                   labelled: bool = True) -> dict[str, Any]:
    """One step on `batch`; model is the DistillModel (or its DDP wrapper). Returns the model's
    output (loss, terms, gates) with the batch's dataset indices."""
    b = to_device(batch, settings.device)
    with torch.autocast(settings.device.type, dtype=torch.bfloat16, enabled=settings.amp):
        out = model(b["image"], b["mask"] if labelled else None, b["dataset"], b["teacher"], b["valid"],
                    b["label"], b["has_mask"])
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    if settings.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
    optimizer.step()
    scheduler.step()
    out["dataset"] = batch["dataset"]
    return out

