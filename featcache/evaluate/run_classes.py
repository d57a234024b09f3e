"""The class names a trained student's outputs stand for, read from the datasets its run names.

A checkpoint stores how many mask classes and classes per classification head the student has
(`StudentConfig.mask_classes`, `classifiers`), not their names: those are the datasets' `classes`.
`run_classes` builds each dataset of the run's manifest to read them; where a dataset cannot be
built here (its folder is on another machine), outputs fall back to numbered names and a note
says so, rather than failing a prediction that needs no dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from featcache.data.registry import build_dataset
from featcache.errors import FeatcacheError
from featcache.manifest import Manifest, StudentConfig


@dataclass
class RunClasses:
    """What a student predicts, with names."""

    mask: tuple[str, ...] | None  # the names of mask classes 1..K; None for a binary student
    heads: dict[str, tuple[str, ...]] = field(default_factory=dict)  # head -> its class names
    segments: bool = True  # whether the run was trained on any segmentation dataset
    notes: list[str] = field(default_factory=list)


def numbered(config: StudentConfig) -> RunClasses:
    """Names without the datasets: "class 1".."class K", "class 0".."class n-1" per head."""
    k = config.mask_classes
    mask = tuple(f"class {i}" for i in range(1, k + 1)) if k > 1 else None
    heads = {h: tuple(f"class {i}" for i in range(n)) for h, n in config.classifiers.items()}
    return RunClasses(mask, heads)


def run_classes(config: StudentConfig, manifest: Manifest) -> RunClasses:
    """The names from the run's datasets: a classification dataset's `classes` for its head, the
    first multi-class segmentation dataset's for the mask (they agree in a run that trains one
    decoder). A run is a segmentation run when any dataset has no head."""
    out = numbered(config)
    out.segments = any(d.name not in config.classifiers for d in manifest.datasets)
    for spec in manifest.datasets:
        head = spec.name in config.classifiers
        if not head and (out.mask is None or not out.mask[0].startswith("class ")):
            continue  # binary masks, or the mask names already found
        try:
            classes = tuple(build_dataset(spec.name, spec.root, **spec.options).classes)
        except FeatcacheError as exc:
            out.notes.append(f"dataset {spec.name} not readable here ({exc}); its classes are numbered")
            continue
        wanted = config.classifiers[spec.name] if head else config.mask_classes
        if len(classes) != wanted:
            out.notes.append(f"dataset {spec.name} now has {len(classes)} classes, the student "
                             f"{wanted}; its classes are numbered")
        elif head:
            out.heads[spec.name] = classes
        else:
            out.mask = classes
    return out
