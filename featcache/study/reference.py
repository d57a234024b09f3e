"""The teacher as a row of the study table: how far the student is from the teacher it learned from.

Output distillation's teacher is the best validated probe of a run (RUN/probes.csv marks it; its
weights are RUN/checkpoints/probes.pt). For every (label fraction, seed) the first distilling arm
with output distillation lends its probe, scored here on the same test images as the students
(foreground Dice per image at the mask's resolution in the student's frame, output_kd.probe_scores;
the students' Dice comes from evaluation at the mask's own resolution, so read small differences
with care). The score is written once to RUN/probe-test-NAME.json and read back on a re-run. The
row also names the teacher's parameters and its extraction time per image as its entry records
them: what running the teacher itself would cost beside the student.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from featcache.distill.build import build_student, build_tasks, items_dataset, labelled_sources
from featcache.distill.data import build_targets, training_items
from featcache.distill.loaders import make_loader
from featcache.distill.loop import to_device
from featcache.distill.output_kd import ProbeSet, probe_scores
from featcache.distill.tasks import Classification
from featcache.errors import FeatcacheError
from featcache.manifest import Manifest
from featcache.runs import Run
from featcache.study.tables import TEACHER_ARM


def teaching_probe(run_dir: Path) -> dict[str, str] | None:
    """The row of RUN/probes.csv that taught (the best validated; the first with output_probes
    all), None when the run fitted no probes."""
    path = Run(run_dir).probe_scores_csv
    if not path.is_file():
        return None
    rows = list(csv.DictReader(path.open()))
    return next((r for r in rows if r.get("teaches") == "1"), rows[0] if rows else None)


def probe_test_score(manifest: Manifest, run_dir: Path, dataset: int = 0) -> dict[str, Any] | None:
    """The teaching probe of a finished run scored on the test split of its dataset number
    `dataset`: {teacher, level, stage, dice_mean, n_test, params, s_per_image}; None when the run
    has no probes."""
    run = Run(run_dir)
    cache = run.path / f"probe-test-{manifest.datasets[dataset].name}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    chosen, saved = teaching_probe(run_dir), run.load_probes()
    if chosen is None or saved is None:
        return None
    sources = labelled_sources(manifest, True)
    tasks = build_tasks(manifest, sources)
    student = build_student(manifest, tasks)
    targets = build_targets(manifest, sources, student.stages)
    target = next(t for t in targets if (t.teacher, t.level, t.stage) ==
                  (chosen["teacher"], chosen["level"], chosen["stage"]))
    probes = ProbeSet(targets, student.mask_channels, student_classes(tasks))
    probes.load_state_dict(saved.model)
    items = training_items(sources[dataset], manifest.datasets[dataset].test_split, 1, 1.0,
                           manifest.training.seed)
    test_set = items_dataset(manifest, sources, items, [target], True, augment=False)
    device = next(probes.parameters()).device
    loader = make_loader(test_set, manifest.training.batch_size, 0, 1, device)
    batches = [to_device(b, device) for b in loader]
    meta = sources[dataset].entries[target.teacher].meta
    seconds, images = meta.get("extract_seconds"), meta.get("layout", {}).get("num_samples")
    result = {"teacher": target.teacher, "level": target.level, "stage": target.stage,
              "dice_mean": probe_scores(probes, [target], batches)[target.key], "n_test": len(items),
              "params": meta.get("teacher", {}).get("params"),
              "s_per_image": float(seconds) / images if seconds and images else None}
    cache.write_text(json.dumps(result, indent=2) + "\n")
    return result


def student_classes(tasks: Any) -> int:
    """The class probes' width, as DistillModel sizes them (the most classes of any dataset)."""
    return max((t.classes for t in tasks.by_dataset if isinstance(t, Classification)), default=0)


def reference_row(base: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    """A results.csv row for the teacher: `base` (fraction, seed, test) with the probe's score."""
    return {**base, "arm": TEACHER_ARM, "arm_name": teacher_name([found]), "compared_to": None,
            "metric": "dice", "score": found["dice_mean"], "dice_mean": found["dice_mean"],
            "n_test": found["n_test"], "params": found["params"],
            "teacher_s_per_image": found["s_per_image"],
            "probe": f"{found['teacher']}/{found['level']}@{found['stage']}"}


def teacher_name(found: list[dict[str, Any]]) -> str:
    """'teacher: best probe (litemedsam; 5.73M params, 6.70 s/image)'; several teachers when the
    best probe differs between seeds."""
    parts = []
    for f in {f["teacher"]: f for f in found}.values():
        params = f"{f['params'] / 1e6:.2f}M params" if f.get("params") else "params unknown"
        time = f", {f['s_per_image']:.2f} s/image to extract" if f.get("s_per_image") else ""
        parts.append(f"{f['teacher']}; {params}{time}")
    return f"teacher: its best probe ({' / '.join(parts)})"


def safe_probe_test_score(manifest: Manifest, run_dir: Path, dataset: int = 0) -> dict[str, Any] | None:
    """probe_test_score, or None (the row is then left out) when the store cannot serve it."""
    try:
        return probe_test_score(manifest, run_dir, dataset)
    except FeatcacheError:
        return None
