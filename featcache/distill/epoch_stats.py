"""Per-epoch running sums of loss terms and teacher-gate weights, summed over DDP ranks at the
end of the epoch so that rank 0 logs what every process saw."""

from __future__ import annotations

from typing import Any

import torch

from featcache.distill.distributed import DistContext, all_reduce_sum


def train_row(epoch: int, terms: dict[str, float], lr: float, seconds: float,
              loss_weights: dict[str, float]) -> dict[str, Any]:
    """metrics.csv's train row of an epoch: loss terms, learning rate, seconds, w_<term> weights."""
    return {"epoch": epoch, "split": "train", **terms, "lr": lr, "seconds": seconds,
            **{f"w_{k}": v for k, v in loss_weights.items()}}


class EpochStats:
    def __init__(self, datasets: list[str], slots: dict[str, list[str]]) -> None:
        """datasets: names by source index; slots: student stage -> teachers competing there."""
        self.datasets = datasets
        self.columns = [(stage, t) for stage, teachers in slots.items() for t in teachers]
        self.col = {c: k for k, c in enumerate(self.columns)}
        self.gate_sum = torch.zeros(len(datasets), len(self.columns), dtype=torch.float64)
        self.gate_count = torch.zeros(len(datasets), dtype=torch.float64)
        self.terms: dict[str, float] = {}
        self.counts: dict[str, int] = {}  # steps whose batch had the term (tasks can be absent)

    def add(self, out: dict[str, Any], dataset_index: torch.Tensor) -> None:
        """out: the model's output dict (loss, terms, gates {stage: (B, T)}); dataset_index (B,)."""
        for k, v in {"loss": out["loss"].detach(), **out["terms"]}.items():
            self.terms[k] = self.terms.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + 1
        ds = dataset_index.long().cpu()
        seen = False
        for stage, w in out["gates"].items():
            w = w.detach().double().cpu()
            for j in range(w.shape[1]):
                teacher = self.columns_for(stage)[j]
                self.gate_sum[:, self.col[(stage, teacher)]].index_add_(0, ds, w[:, j])
            seen = True
        if seen:
            self.gate_count.index_add_(0, ds, torch.ones(len(ds), dtype=torch.float64))

    def columns_for(self, stage: str) -> list[str]:
        return [t for s, t in self.columns if s == stage]

    def reduce(self, ctx: DistContext) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """(mean of each loss term over the steps that had it, {"dataset/stage": {teacher: mean
        weight}}) over ranks."""
        names = list(self.terms)  # same insertion order on every rank
        flat = torch.cat([torch.tensor([self.terms[n] for n in names] + [self.counts[n] for n in names],
                                       dtype=torch.float64), self.gate_sum.flatten(), self.gate_count])
        flat = all_reduce_sum(flat, ctx)
        k = len(names)
        terms = {n: float(flat[i]) / max(1.0, float(flat[k + i])) for i, n in enumerate(names)}
        gate_sum = flat[2 * k: 2 * k + self.gate_sum.numel()].view_as(self.gate_sum)
        count = flat[2 * k + self.gate_sum.numel():]
        gates: dict[str, dict[str, float]] = {}
        for d, name in enumerate(self.datasets):
            if count[d] == 0:
                continue
            for (stage, teacher), c in self.col.items():
                gates.setdefault(f"{name}/{stage}", {})[teacher] = float(gate_sum[d, c] / count[d])
        return terms, gates
