"""Which task's gradient dominates a multi-task student? Per batch, each task's loss and the norm
of its gradient (over the encoder the tasks share, and over every parameter).

    python pipelines/task_gradients.py --manifest manifests/study-multitask.yaml [--run RUN] [--batches 6]

builds the manifest's training (its datasets, tasks and student; the teachers only when the
manifest distils), loads RUN's last checkpoint if given (else the initial weights), and prints one
line per mixed batch drawn from the training split. `training.grad_clip` bounds the norm of the
summed gradient of a step: where one task's norm is 100 times the other's, the clip shrinks the
quiet task's gradient 100-fold with it (docs/multitask.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from featcache.distill.loaders import make_loader
from featcache.distill.loop import to_device
from featcache.distill.trainer import Trainer
from featcache.manifest import load_manifest
from featcache.runs import Run


def _norm(grads: tuple[torch.Tensor | None, ...]) -> float:
    return float(torch.sqrt(sum(((g.double() ** 2).sum() for g in grads if g is not None),
                                torch.zeros((), dtype=torch.float64))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--run", type=Path, default=None,
                        help="a run directory: its last checkpoint's weights (default: the initial ones)")
    parser.add_argument("--batches", type=int, default=6)
    args = parser.parse_args(argv)
    manifest = load_manifest(args.manifest)
    trainer = Trainer(manifest)  # builds the run's data and model; writes nothing
    try:
        model = trainer.model
        if args.run is not None:
            student, _ = Run(args.run).load_student("last")
            model.student.load_state_dict(student.state_dict())
        model.train()
        shared = [p for n, p in model.student.named_parameters() if n.startswith("encoder")]
        every = [p for p in model.parameters() if p.requires_grad]
        size, n = manifest.training.batch_size, len(trainer.data.train_items)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
        picks = [order[k * size:(k + 1) * size] for k in range(min(args.batches, n // size))]
        loader = make_loader(trainer.data.train_set, size, 0, 1, trainer.device, batches=picks)
        for k, batch in enumerate(loader):
            b = to_device(batch, trainer.device)
            logits, feats = model.student.forward_features(b["image"])
            terms = model.tasks.losses(model.student, logits, feats, b["mask"], b["label"], b["dataset"])
            said = []
            for name, loss in terms.items():
                on_shared = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
                on_all = torch.autograd.grad(loss, every, retain_graph=True, allow_unused=True)
                said.append(f"{name}: loss {float(loss.detach()):.3f}, |grad| encoder "
                            f"{_norm(on_shared):.3f}, all {_norm(on_all):.3f}")
            print(f"batch {k + 1} ({int((b['label'] < 0).sum())} segmentation images): " + "; ".join(said))
    finally:
        trainer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
