"""A starting manifest for a dataset and teachers (what `featcache init` prints).

The dataset is opened at its root (so a wrong folder fails here, not at extraction) and its
resolved loader options (seed, split fractions, loader-specific ones) go into the manifest. A
teacher with a tried recipe gets the taps the demo trains with (`RECOMMENDED_TAPS`: LiteMedSAM's
stage-2 output at the stride-8 encoder stage, its embedding at the stride-16 encoder stage and the
stride-4 decoder stage); other levels are matched from the student stage whose grid at the
student's image size is closest to the teacher's (log scale; ties go to the coarser stage, which
is cheaper and is what the loss meets anyway), among stages of stride >= 4, which have the
channels to project from. The manifest is built through the pydantic models, so it is valid for
this featcache's schema.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from featcache.errors import ConfigError
from featcache.manifest import Manifest, StudentConfig

# teacher -> {level: student stage(s)}: the taps manifests/demo.yaml trains with.
RECOMMENDED_TAPS: dict[str, dict[str, str | list[str]]] = {
    "litemedsam": {"stage2": "enc3", "embedding": ["enc4", "dec3"]},
}

_MIN_STRIDE = 4
_NEEDS_CHECKPOINT = ("sam", "medsam", "clip")


def student_stages(student: StudentConfig) -> dict[str, tuple[int, int]]:
    """{stage: (channels, stride)} of the student a StudentConfig describes (random init: no weights read)."""
    from featcache.student import Student

    return dict(Student(student.model_copy(update={"encoder_weights": None})).stages)


def match_stage(grid: tuple[int, int], image_size: int, stages: dict[str, tuple[int, int]]) -> str:
    """The stage whose (image_size / stride) grid is closest to the teacher's `grid`."""
    candidates = [(abs(math.log((image_size / stride) / grid[0])), -stride, name)
                  for name, (_, stride) in stages.items() if stride >= _MIN_STRIDE]
    return min(candidates)[2]


def _teacher_info(name: str) -> Any:
    from featcache.teachers.registry import describe_teachers

    infos = {t.name: t for t in describe_teachers()}
    if name not in infos:
        raise ConfigError(f"unknown teacher {name!r}; `featcache teachers list` shows {', '.join(infos)}")
    if not infos[name].default_levels:
        raise ConfigError(f"teacher {name}: its levels depend on --arch; write its `levels:` by hand "
                          f"(`featcache teachers list` describes them)")
    return infos[name]


def _assign_checkpoints(teachers: list[str], checkpoints: list[str]) -> dict[int, str]:
    """NAME=FILE goes to that teacher; a plain FILE to the next teacher that takes a checkpoint."""
    out: dict[int, str] = {}
    waiting = [i for i, t in enumerate(teachers) if t in _NEEDS_CHECKPOINT]
    for item in checkpoints:
        name, sep, path = item.partition("=")
        if sep and name in teachers:
            out[teachers.index(name)] = path
        elif waiting:
            out[waiting.pop(0)] = item
        else:
            raise ConfigError(f"--checkpoint {item}: no teacher left to take it; write NAME=FILE")
    return out


def teacher_taps(name: str, image_size: int, stages: dict[str, tuple[int, int]]
                 ) -> tuple[dict[str, str | list[str]], list[str]]:
    """A teacher's {level: student stage(s)} and a note per level saying what meets what: the
    recommended taps when the teacher has their levels and the student their stages, else each
    default level from the stage with the closest grid."""
    info = _teacher_info(name)
    has = {lv.name for lv in info.default_levels} | set(info.other_levels)
    recommended = RECOMMENDED_TAPS.get(name, {})
    fits = all(level in has and all(s in stages for s in ([to] if isinstance(to, str) else to))
               for level, to in recommended.items())
    if recommended and fits:
        return dict(recommended), [f"{name}.{level} <- student {to} (the demo's taps)"
                                   for level, to in recommended.items()]
    taps: dict[str, str | list[str]] = {}
    notes = []
    for lv in info.default_levels:
        stage = taps[lv.name] = match_stage(tuple(lv.grid), image_size, stages)
        side = image_size // stages[stage][1]
        notes.append(f"{name}.{lv.name}: {lv.channels} x {lv.grid[0]} x {lv.grid[1]} <- student "
                     f"{stage} ({side} x {side} at {image_size} px)")
    return taps, notes


def _absolute(path: str | Path) -> str:
    """A file or folder given on the command line, absolute when it exists here: the manifest then
    works from any folder (a relative root would be read relative to the manifest's own folder)."""
    found = Path(path).expanduser()
    return str(found.resolve()) if found.exists() else str(path)


def build_manifest(dataset: str, root: Path | None, teachers: list[str], checkpoints: list[str],
                   image_size: int) -> tuple[Manifest, list[str]]:
    """(Manifest, comment lines about the choices made). A classification dataset also taps each
    teacher's `global` level (every teacher has one) from the last encoder stage."""
    from featcache.data.registry import build_dataset

    data = build_dataset(dataset, root)
    stages = student_stages(StudentConfig(image_size=image_size))
    notes = [f"dataset {dataset} ({data.task}): {len(data)} samples, splits "
             + ", ".join(f"{s} {len(data.split_indices(s))}" for s in ("train", "val", "test"))]
    specs: list[dict[str, Any]] = []
    paths = _assign_checkpoints(teachers, checkpoints)
    for i, name in enumerate(teachers):
        levels, level_notes = teacher_taps(name, image_size, stages)
        notes += level_notes
        if data.task == "classification":  # the image vector feeds the classifier's stage
            levels["global"] = last = [st for st in stages if st.startswith("enc")][-1]
            notes.append(f"{name}.global (its image vector) <- student {last}, whose pooled features "
                         f"the {len(data.classes)}-class classifier reads")
        spec: dict[str, Any] = {"name": name, "levels": levels}
        if i in paths:
            spec["checkpoint"] = _absolute(paths[i])
        elif name in _NEEDS_CHECKPOINT:
            notes.append(f"{name}: no --checkpoint given; set teachers[{i}].checkpoint to its weights file")
        specs.append(spec)
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in data.options.items() if k != "root"}
    manifest = Manifest.model_validate({
        "run_dir": f"runs/{dataset}", "store": None,
        "datasets": [{"name": dataset, "root": None if root is None else _absolute(root),
                      "options": options}],
        "teachers": specs, "student": {"image_size": image_size}})
    return manifest, notes
