"""`featcache probe --manifest m.yaml`: which teacher, and which of its levels, is worth
distilling for *my* data, before a lab spends a study on it.

For every dataset of the manifest, every teacher and every level its store entry holds: a linear
probe (output_kd.ProbeSet: a 1x1 convolution per cell on the teacher's native grid for masks, a
linear layer on the pooled features for classes) is fitted on the labelled training items (the
manifest's training.train_fraction and seed, as a distillation run draws them; distill.probe_steps
full passes) from the cache alone, then scored on the validation and the test split: per image,
the mask's foreground Dice at the mask's resolution, or whether the class is right
(output_kd.probe_scores, the score output distillation ranks its probes by). Rank by validation;
the test column is there to report, never to choose by.

A teacher whose entry the store lacks is skipped with a note (run `featcache extract` for it),
so a store holding some of the manifest's teachers still ranks those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from featcache.devices import resolve_device
from featcache.distill.build import build_sources, build_tasks, items_dataset
from featcache.distill.data import Source, training_items
from featcache.distill.loaders import make_loader
from featcache.distill.loop import to_device
from featcache.distill.output_kd import ProbeSet, fit_probes, mask_target, probe_scores
from featcache.distill.targets import Target
from featcache.distill.tasks import Classification
from featcache.errors import ConfigError, StoreError
from featcache.manifest import Manifest


@dataclass
class ProbeRanking:
    rows: list[dict[str, Any]]  # one per (dataset, teacher, level), best validation first per dataset
    notes: list[str] = field(default_factory=list)


def rank_probes(manifest: Manifest, on_row: Callable[[dict[str, Any]], None] | None = None) -> ProbeRanking:
    """Fit and score a probe per (dataset, teacher, level) the store holds; on_row sees each row
    as it is done."""
    device = resolve_device(manifest.training.device, "training.device")
    notes: list[str] = []
    sources = _sources(manifest, notes)
    tasks = build_tasks(manifest, sources)
    rows = []
    for source, task in zip(sources, tasks.by_dataset, strict=True):
        spec = manifest.datasets[source.index]
        tr = manifest.training
        splits = {"train": training_items(source, spec.train_split, tr.views, tr.train_fraction, tr.seed),
                  "val": training_items(source, spec.val_split, 1, 1.0, tr.seed),
                  "test": training_items(source, spec.test_split, 1, 1.0, tr.seed)}
        for teacher in manifest.teachers:
            reader = source.entries.get(teacher.label)
            if reader is None:
                continue
            for level, shape in reader.levels.items():
                grid = (shape.height, shape.width)
                target = Target(teacher.label, level, shape.channels, grid, "probe", grid)
                scores = _fit_and_score(manifest, source, task, target, splits, device)
                rows.append({"dataset": spec.name, "teacher": teacher.label, "level": level,
                             "channels": shape.channels, "grid": f"{shape.height}x{shape.width}",
                             "train_items": len(splits["train"]), **scores,
                             "teacher_params": reader.meta.get("teacher", {}).get("params"),
                             "teacher_s_per_image": _seconds_per_image(reader.meta)})
                if on_row is not None:
                    on_row(rows[-1])
    rows.sort(key=lambda r: (r["dataset"], -r["val_score"]))
    return ProbeRanking(rows, notes)


def _sources(manifest: Manifest, notes: list[str]) -> list[Source]:
    """The manifest's datasets with the entries the store has: a teacher without one is left out
    (a note says so); none at all is an error."""
    sources = build_sources(manifest, False)
    for spec, source in zip(manifest.datasets, sources, strict=True):
        if not source.dataset.labelled:
            raise ConfigError(f"dataset {spec.name} has no masks or labels: a probe needs labelled data")
        for teacher in manifest.teachers:
            one = manifest.model_copy(update={"teachers": [teacher], "datasets": [spec]})
            try:
                source.entries[teacher.label] = build_sources(one, True)[0].entries[teacher.label]
            except StoreError as exc:
                notes.append(f"skipped teacher {teacher.label} on {spec.name}: {exc}")
        if source.entries:
            views = min(e.layout.views for e in source.entries.values())
            source.views = views
    if not any(s.entries for s in sources):
        raise StoreError("no teacher of the manifest has an entry in the store for its datasets; run "
                         "`featcache extract --manifest ...` first")
    return sources


def _fit_and_score(manifest: Manifest, source: Source, task: Any, target: Target,
                   splits: dict[str, list[tuple[int, int, int]]], device: torch.device) -> dict[str, float]:
    classes = task.classes if isinstance(task, Classification) else 0
    mask_channels = 1 if isinstance(task, Classification) or task.classes == 1 else task.classes + 1
    torch.manual_seed(manifest.training.seed)
    probes = ProbeSet([target], mask_channels, classes).to(device)
    train = _batches(manifest, source, target, splits["train"], device)
    if classes:
        fit_probes(probes, [target], train, manifest.distill.probe_steps)
    else:
        fit_mask_probe(probes.masks[next(iter(probes.masks))], train, target, manifest.distill.probe_steps)
    out = {}
    for split in ("val", "test"):
        scores = probe_scores(probes, [target], _batches(manifest, source, target, splits[split], device))
        out[f"{split}_score"] = scores.get(target.key, float("nan"))
    return out


def fit_mask_probe(conv: torch.nn.Conv2d, batches: list[dict[str, Any]], target: Target, steps: int,
                   lr: float = 1e-2) -> None:
    """output_kd.fit_probes' objective and optimiser for one mask probe (Adam at `lr`, one step
    per full pass; a batch's samples weigh 1/batch size, each cell by the share of its sample the
    teacher saw), with every cell of every batch in one matrix: one product per pass instead of a
    convolution per batch. Side by side on the demo's stage-2 map (28 slices, 30 passes, a busy
    2-core machine): 4.0 against 16.1 CPU seconds, weights within 2e-5, the same validation Dice."""
    xs, ys, ws = [], [], []
    for b in batches:
        feature, valid = b["teacher"][target.key], b["valid"][target.key]
        y = mask_target(b["mask"], conv.out_channels, feature.shape[-2:])
        w = valid / valid.flatten(1).sum(1).clamp_min(1.0)[:, None, None, None] / len(b["label"])
        xs.append(feature.permute(0, 2, 3, 1).flatten(0, 2))
        ys.append(y.permute(0, 2, 3, 1).flatten(0, 2))
        ws.append(w.flatten())
    x, y, w = torch.cat(xs), torch.cat(ys), torch.cat(ws)
    weight = conv.weight.detach().flatten(1).clone().requires_grad_(True)  # (M, C)
    bias = conv.bias.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        logits = torch.addmm(bias, x, weight.T)
        if logits.shape[1] == 1:
            per_cell = F.binary_cross_entropy_with_logits(logits[:, 0], y[:, 0], reduction="none")
        else:
            per_cell = -(y * torch.log_softmax(logits, dim=1)).sum(1)
        (per_cell * w).sum().backward()
        optimizer.step()
    with torch.no_grad():
        conv.weight.copy_(weight.view_as(conv.weight))
        conv.bias.copy_(bias)


def _batches(manifest: Manifest, source: Source, target: Target, items: list[tuple[int, int, int]],
             device: torch.device) -> list[dict[str, Any]]:
    """`items` with `target`'s features on its native grid, read once, without augmentation."""
    solo = Source(0, source.dataset, source.entries, source.views)  # other datasets may lack the teacher
    dataset = items_dataset(manifest, [solo], [(0, i, v) for _, i, v in items], [target], True,
                            augment=False)
    loader = make_loader(dataset, manifest.training.batch_size, 0, 1, device)
    return [to_device(batch, device) for batch in loader]


def _seconds_per_image(meta: dict[str, Any]) -> float | None:
    """The teacher's extraction time per stored image (the whole extraction, on its machine)."""
    seconds, samples = meta.get("extract_seconds"), meta.get("layout", {}).get("num_samples")
    return float(seconds) / samples if seconds and samples else None


COLUMNS = ("dataset", "teacher", "level", "channels", "grid", "train_items", "val_score", "test_score",
           "teacher_params", "teacher_s_per_image")


def write_ranking(ranking: ProbeRanking, out: Path) -> list[Path]:
    """OUT/probes.csv (every row), OUT/probes.md (the table and the notes), OUT/probes.png."""
    from featcache.study.plots import probe_plot
    from featcache.study.tables import fmt, md_table, write_csv

    out.mkdir(parents=True, exist_ok=True)
    body = [[fmt(r[c], 4) if c.endswith("score") else fmt(r[c]) for c in COLUMNS] for r in ranking.rows]
    text = ["### Linear probes per teacher level (ranked by validation score)", "",
            "Fitted on the labelled training items from the cache; Dice at the mask's resolution "
            "(classification: accuracy). Choose by validation, never by test.", "",
            md_table(COLUMNS, body)] + ([""] + [f"- {n}" for n in ranking.notes] if ranking.notes else [])
    md = out / "probes.md"
    md.write_text("\n".join(text) + "\n")
    return [write_csv(out / "probes.csv", ranking.rows), md, probe_plot(ranking.rows, out / "probes.png")]
