"""`featcache init`: a commented, validated manifest to start a project from.

featcache.starter builds it (the dataset opened, its options resolved, each teacher level matched
to a student stage); this module writes it out as commented YAML.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from featcache.cli.app import app

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


@app.command(short_help="Print a commented, validated manifest to start from.",
             epilog="Example: featcache init --dataset folder --root my-data --teacher litemedsam > m.yaml")
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
    from featcache.starter import build_manifest

    manifest, notes = build_manifest(dataset, root, teacher, checkpoint or [], image_size)
    argv = " ".join([f"--dataset {dataset}", *([f"--root {root}"] if root else []),
                     *(f"--teacher {t}" for t in teacher)])
    text = render(manifest, notes, argv)
    manifest_from_dict(yaml.safe_load(text), "the generated manifest")  # what it says is what loads
    typer.echo(text, nl=False)
