"""Per-dataset batches (training.batches: per_dataset): every optimizer step on one dataset's
samples, the datasets taking turns, as the paper's code trains its one student over six datasets.

Why: with mixed batches a task's loss is the mean over the few of its samples a batch happens to
hold (about half of them with two datasets), so each task's gradient is noisier than in a run of
its own, and a step mixes the two tasks' directions. With per-dataset batches a run of S + C steps
over a segmentation and a classification dataset interleaves the S full-batch steps of one with
the C of the other: each task gets what its own run gave it, and the only difference left is the
other task's updates of the shared encoder (BatchNorm also normalises each batch within one
dataset, as in the single-task runs).

The epoch's dataset-balanced draw (BalancedShardSampler) chooses the items as before; here they
are regrouped: the epoch's steps are dealt to the datasets in proportion to their share of the
draw (equal for the balanced draw, up to one step), in an order shuffled by (seed, epoch), and
each dataset's steps take its items in draw order, wrapping around if it has fewer than its
batches need. Every rank deals the same order, so all ranks step on one dataset at a time.
"""

from __future__ import annotations

import torch


def per_dataset_order(draw: list[int], dataset_of: list[int], batch_size: int, steps: int,
                      seed: int, epoch: int) -> list[int]:
    """draw: this rank's item indices for the epoch; dataset_of[i]: item i's dataset. Returns
    steps * batch_size indices whose consecutive batch_size blocks each hold one dataset."""
    groups: dict[int, list[int]] = {}
    for i in draw:
        groups.setdefault(dataset_of[i], []).append(i)
    datasets = sorted(groups)
    if len(datasets) < 2:
        return draw  # one dataset: the draw as it is (single-dataset runs are unchanged)
    # Steps per dataset in proportion to its share of the draw; the remainder to the largest shares.
    exact = [steps * len(groups[d]) / len(draw) for d in datasets]
    counts = [int(e) for e in exact]
    by_remainder = sorted(range(len(datasets)), key=lambda k: exact[k] - counts[k], reverse=True)
    for k in by_remainder[:steps - sum(counts)]:
        counts[k] += 1
    gen = torch.Generator().manual_seed(seed * 1000 + epoch)
    turns = [d for d, c in zip(datasets, counts, strict=True) for _ in range(c)]
    turns = [turns[int(k)] for k in torch.randperm(len(turns), generator=gen)]
    taken = dict.fromkeys(datasets, 0)
    out: list[int] = []
    for d in turns:
        items = groups[d]
        out += [items[(taken[d] + j) % len(items)] for j in range(batch_size)]
        taken[d] += batch_size
    return out
