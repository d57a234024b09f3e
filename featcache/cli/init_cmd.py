"""`featcache init`: a commented, validated manifest to start a project from.

The dataset is opened at --root (so a wrong folder fails here, not at extraction) and its resolved
loader options (seed, split fractions, loader-specific ones) are written out. Each teacher's
default level is matched from the student stage whose grid at the student's image size is closest
to the teacher's (log scale; ties go to the coarser stage, which is cheaper and is what the loss
meets anyway), among stages of stride >= 4, which have the channels to project from.
The manifest is built through the pydantic models, so it is valid for this featcache's schema.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from featcache.cli.app import app
from featcache.errors import ConfigError

if TYPE_CHECKING:
    from featcache.manifest import StudentConfig

_MIN_STRIDE = 4
_NEEDS_CHECKPOINT = ("sam", "medsam", "clip")


def student_stages(student: StudentConfig) -> dict[str, tuple[int, int]]:
    """{stage: (channels, stride)} of the student a StudentConfig describes (random init: no weights read)."""
    from featcache.distill.student import Student

    return dict(Student(student.model_copy(update={"encoder_weights": None})).stages)


def match_stage(grid: tuple[int, int], image_size: int, stages: dict[str, tuple[int, int]]) -> str:
    """The stage whose (image_size / stride) grid is closest to the teacher's `grid`."""
    candidates = [(abs(math.log((image_size / stride) / grid[0])), -stride, name)
                  for name, (_, stride) in stages.items() if stride >= _MIN_STRIDE]
    return min(candidates)[2]


def _teacher_levels(name: str):
    from featcache.teachers.registry import describe_teachers

    infos = {t.name: t for t in describe_teachers()}
    if name not in infos:
        raise ConfigError(f"unknown teacher {name!r}; `featcache teachers list` shows {', '.join(infos)}")
    if not infos[name].default_levels:
        raise ConfigError(f"teacher {name}: its levels depend on --arch; write its `levels:` by hand "
                          f"(`featcache teachers list` describes them)")
    return infos[name].default_levels


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


def build_manifest(dataset: str, root: Path | None, teachers: list[str], checkpoints: list[str],
                   image_size: int) -> tuple[Any, list[str]]:
    """(Manifest, comment lines about the choices made)."""
    from featcache.data.registry import build_dataset
    from featcache.manifest import Manifest, StudentConfig

    data = build_dataset(dataset, root)
    student = StudentConfig(image_size=image_size)
    stages = student_stages(student)
    notes = [f"dataset {dataset}: {len(data)} samples, splits "
             + ", ".join(f"{s} {len(data.split_indices(s))}" for s in ("train", "val", "test"))]
    specs = []
    paths = _assign_checkpoints(teachers, checkpoints)
    for i, name in enumerate(teachers):
        levels = {}
        for lv in _teacher_levels(name):
            levels[lv.name] = match_stage(tuple(lv.grid), image_size, stages)
            _, stride = stages[levels[lv.name]]
            side = image_size // stride
            notes.append(f"{name}.{lv.name}: {lv.channels} x {lv.grid[0]} x {lv.grid[1]} <- student "
                         f"{levels[lv.name]} ({side} x {side} at {image_size} px)")
        spec = {"name": name, "levels": levels}
        if i in paths:
            spec["checkpoint"] = str(paths[i])
        elif name in _NEEDS_CHECKPOINT:
            notes.append(f"{name}: no --checkpoint given; set teachers[{i}].checkpoint to its weights file")
        specs.append(spec)
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in data.options.items() if k != "root"}
    manifest = Manifest.model_validate({
        "run_dir": f"runs/{dataset}", "store": None,
        "datasets": [{"name": dataset, "root": None if root is None else str(root), "options": options}],
        "teachers": specs, "student": {"image_size": image_size}})
    return manifest, notes


_SECTION_NOTES = {
    "store": "feature store URL: a folder, file://, memory:// or s3://; null = $FEATCACHE_STORE or "
             "./featcache-store",
    "run_dir": "where distill writes checkpoints, metrics.csv, gates.csv; eval and report read it",
    "datasets": "options: the loader's resolved options (seed and fractions choose the split; "
                "see featcache/data/loaders/<name>.py). Changing them changes the dataset fingerprint, "
                "hence the store entry",
    "teachers": "levels: teacher level -> the student stage it is matched from (a list for several taps)",
    "student": "the defaults (ImageNet-pretrained efficientnet_lite0 + U-Net decoder) unless set here",
}


def render(manifest: Any, notes: list[str], argv: str) -> str:
    """YAML with a header and a comment above each section; every section that was set is written."""
    data = manifest.model_dump(mode="json", exclude_unset=True)
    lines = [f"# Written by `featcache init {argv}`.", "# Then:",
             "#   featcache extract --manifest THIS.yaml", "#   featcache distill --manifest THIS.yaml",
             f"#   featcache eval --run {manifest.run_dir} && featcache report --run {manifest.run_dir}", "#"]
    lines += [f"# {n}" for n in notes]
    for key, value in data.items():
        lines.append("")
        if key in _SECTION_NOTES:
            lines += [f"# {line}" for line in textwrap.wrap(_SECTION_NOTES[key], 98, break_on_hyphens=False)]
        lines.append(yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False).rstrip())
    return "\n".join(lines) + "\n"


@app.command()
def init(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="A dataset (`featcache datasets list`).")],
    teacher: Annotated[list[str], typer.Option("--teacher", "-t", help="A teacher (repeat for several).")],
    root: Annotated[Path | None, typer.Option("--root", "-r", help="The dataset folder as published "
                                                                   "(the demo needs none).")] = None,
    checkpoint: Annotated[list[str] | None, typer.Option(
        "--checkpoint", help="Weights file of the next teacher that needs one (sam, medsam, clip), "
                             "or NAME=FILE.")] = None,
    image_size: Annotated[int, typer.Option("--image-size", help="The student's input size S.")] = 256,
) -> None:
    """Print a commented manifest for a dataset and teachers, validated, ready for
    `featcache extract --manifest` and `featcache distill --manifest`:

        featcache init --dataset busi --root DIR --teacher litemedsam > m.yaml
    """
    from featcache.manifest import manifest_from_dict

    manifest, notes = build_manifest(dataset, root, teacher, checkpoint or [], image_size)
    argv = " ".join([f"--dataset {dataset}", *([f"--root {root}"] if root else []),
                     *(f"--teacher {t}" for t in teacher)])
    text = render(manifest, notes, argv)
    manifest_from_dict(yaml.safe_load(text), "the generated manifest")  # what it says is what loads
    typer.echo(text, nl=False)
