"""Checkpoints written by older featcache versions, brought to today's form before they are read.

One ordered table, `STEPS`: each step says what changed and turns a payload of the form before
the change into the form after it, leaving a payload already in that form as it is. Every
checkpoint, of any age, passes through all of them in order, so a reader of checkpoints
(`Checkpoint.from_payload`) knows one form only. A change to what a checkpoint holds adds a step
at the end; none is ever removed while a run of that age may exist.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from featcache.data.recipe import Intensity, Labels, Recipe, Slicing
from featcache.manifest import StudentConfig

Payload = dict[str, Any]


@dataclass(frozen=True)
class Step:
    change: str  # what changed, in words (the table is read by people too)
    upgrade: Callable[[Payload, Path], Payload]


def known_keys(model: type[BaseModel], data: Any) -> Any:
    """`data` without the keys `model` (and the models inside it) no longer has."""
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        if key not in model.model_fields:
            continue
        inner = _model_in(model.model_fields[key].annotation)
        if inner is not None:
            value = ([known_keys(inner, v) for v in value] if isinstance(value, list)
                     else known_keys(inner, value))
        out[key] = value
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds directly or as a list of it, else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _entries_as_dict(payload: Payload, path: Path) -> Payload:
    raw = payload.get("entries")
    if isinstance(raw, dict):
        return {**payload, "entries": {str(k): str(v) for k, v in raw.items()}}
    keys = [e.get("key", "") if isinstance(e, dict) else str(e) for e in raw or []]
    return {**payload, "entries": {k: k for k in keys if k}}


def _store_as_url(payload: Payload, path: Path) -> Payload:
    raw = payload.get("store") or (payload.get("manifest") or {}).get("store")
    if isinstance(raw, dict):
        raw = raw.get("url") or raw.get("path")
    return {**payload, "store": str(raw) if raw else None}


def _student_keys_of_today(payload: Payload, path: Path) -> Payload:
    return {**payload, "student_config": known_keys(StudentConfig, payload["student_config"])}


def _identity_normalisation(payload: Payload, path: Path) -> Payload:
    config = dict(payload["student_config"])
    channels = config.get("in_channels", StudentConfig.model_fields["in_channels"].default)
    config.setdefault("input_mean", [0.0] * channels)
    config.setdefault("input_std", [1.0] * channels)
    return {**payload, "student_config": config}


def legacy_recipes(mask_classes: int) -> dict[str, Recipe]:
    """What `featcache predict` applied to every run before recipes: 2D images as stored (grey or
    RGB, the student's input adapter matching its channels), and NIfTI volumes the demo's way (the
    1st-99th percentile of the positive voxels, axial slices of the stored voxels shown as a RAS
    volume's are, whatever the header says); label maps held class indices."""
    k = int(mask_classes)
    labels = Labels() if k == 1 else Labels(tuple(f"class {i}" for i in range(1, k + 1)),
                                            tuple((i,) for i in range(1, k + 1)))
    volumes = Recipe("nifti", channels=1, intensity=Intensity("percentiles", 1.0, 99.0, "positive"),
                     slicing=Slicing(axis=2, orientation="PRS", assume="RAS"), labels=labels)
    return {"images (before recipes)": Recipe("image", channels=None, labels=labels),
            "volumes (before recipes)": volumes}


def _recipes_of_before(payload: Payload, path: Path) -> Payload:
    if "recipes" in payload:
        return payload
    classes = payload["student_config"].get("mask_classes", 1)
    return {**payload, "recipes": {k: r.to_dict() for k, r in legacy_recipes(classes).items()}}


STEPS: tuple[Step, ...] = (
    Step("entries were a list of keys (or of {'key': ...}); now {'dataset/teacher': key}, where "
         "each old key stands for itself", _entries_as_dict),
    Step("the store was a dict with 'url' or 'path', or only in the saved manifest; now its URL",
         _store_as_url),
    Step("student config keys removed since (the dataclass config's encoder_kwargs, ...) are left "
         "out", _student_keys_of_today),
    Step("before the input normalisation existed, [0, 1] images were fed unchanged: mean 0, std 1",
         _identity_normalisation),
    Step("before the input recipe was saved, predict read every run's inputs one way: "
         "legacy_recipes", _recipes_of_before),
)


def upgrade(payload: Payload, path: Path) -> Payload:
    """A checkpoint payload of any age -> today's form (see STEPS)."""
    for step in STEPS:
        payload = step.upgrade(payload, path)
    return payload
