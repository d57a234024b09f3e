"""Train your own tiny segmentation head on cached teacher features, through featcache's Python API.

    python pipelines/own_head_example.py [--store ./featcache-store] [--teacher litemedsam] [--epochs 5]

By default it uses the embedded demo's store (made by `bash pipelines/quickstart.sh`, or
`featcache extract --teacher litemedsam --dataset demo`): a linear head (a 1x1 convolution) on one
teacher level predicts the mask, trained on the train split, scored on the val split. No teacher
runs: every feature comes from the store.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import featcache


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default=None, help="store URL (default: $FEATCACHE_STORE or ./featcache-store)")
    p.add_argument("--dataset", default="demo")
    p.add_argument("--teacher", default="litemedsam")
    p.add_argument("--level", default=None, help="teacher level (default: the entry's first)")
    p.add_argument("--root", default=None, help="dataset folder (the demo needs none)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--image-size", type=int, default=128)
    return p.parse_args(argv)


def dice(logits: torch.Tensor, mask: torch.Tensor) -> float:
    pred = logits > 0
    inter = (pred & (mask > 0.5)).sum().item()
    return 2 * inter / max(1, pred.sum().item() + (mask > 0.5).sum().item())


def main(argv: list[str] | None = None) -> float:
    args = parse(argv)
    store = featcache.open_store(args.store)
    found = store.find(teacher=args.teacher, dataset=args.dataset)
    if not found:
        print(f"no complete {args.teacher} entry for dataset {args.dataset} in {store.url}; make one with "
              f"`featcache extract --teacher {args.teacher} --dataset {args.dataset}` "
              "(or `bash pipelines/quickstart.sh` for the demo)", file=sys.stderr)
        raise SystemExit(1)
    entry = found[0]
    level = args.level or next(iter(entry.levels))
    key = f"{entry.teacher}/{level}"
    print(entry, "\nprovenance:", entry.provenance["teacher"].get("weights_source"))
    data = {split: featcache.CachedFeatures(entry, roots=args.root, split=split, levels=[level],
                                            image_size=args.image_size) for split in ("train", "val")}
    torch.manual_seed(0)
    head = torch.nn.Conv2d(entry.levels[level][0], 1, kernel_size=1)  # your model goes here
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)
    for epoch in range(args.epochs):
        for batch in DataLoader(data["train"], batch_size=8, shuffle=True):
            logits = F.interpolate(head(batch["features"][key]), size=batch["mask"].shape[-2:],
                                   mode="bilinear", align_corners=False)
            loss = F.binary_cross_entropy_with_logits(logits, batch["mask"])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        print(f"epoch {epoch + 1}: train loss {loss.item():.4f}")
    with torch.no_grad():
        batches = list(DataLoader(data["val"], batch_size=len(data["val"])))
        logits = F.interpolate(head(batches[0]["features"][key]), size=batches[0]["mask"].shape[-2:],
                               mode="bilinear", align_corners=False)
    score = dice(logits, batches[0]["mask"])
    print(f"val pooled Dice of the {key} linear head: {score:.3f}")
    return score


if __name__ == "__main__":
    main()
