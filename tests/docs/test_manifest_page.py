"""Every key of the manifest's pydantic models is on the manifest reference page, written as its
dotted path (`distill.output_probes`, `datasets[].root`): a key added to featcache/manifest.py
without a line in docs/manifest.md fails here."""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel

from featcache.manifest import DatasetSpec, Manifest
from tests.docs.pages import page


def _models_in(annotation) -> list[tuple[type[BaseModel], bool]]:
    """(model, inside a list) for each pydantic model an annotation holds."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, False)]
    origin = typing.get_origin(annotation)
    found = []
    for arg in typing.get_args(annotation):
        found += [(model, listed or origin is list) for model, listed in _models_in(arg)]
    return found if origin in (list, typing.Union, types.UnionType) else []


def manifest_keys(model: type[BaseModel] = Manifest, prefix: str = "",
                  seen: set[type[BaseModel]] | None = None) -> list[str]:
    """Dotted keys of every field, nested models included; a model met again (`pretrain.datasets`
    holds DatasetSpec, documented under `datasets[]`) is listed once, at its first place."""
    seen = set() if seen is None else seen
    seen.add(model)
    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        keys.append(key)
        for inner, listed in _models_in(field.annotation):
            if inner not in seen:
                keys += manifest_keys(inner, f"{key}{'[]' if listed else ''}.", seen)
    return keys


def test_every_manifest_key_is_on_the_reference_page():
    text = page("manifest.md")
    missing = [key for key in manifest_keys() if f"`{key}`" not in text]
    assert not missing, f"docs/manifest.md does not describe {missing}: add a row for each"


def test_the_walk_reaches_nested_and_listed_models():
    keys = manifest_keys()
    assert {"distill.output_probes", "training.augment.gamma", "datasets[].root",
            "teachers[].levels", "pretrain.steps"} <= set(keys)
    assert not [k for k in keys if k.startswith("pretrain.datasets[]")]  # DatasetSpec once
    assert DatasetSpec in {m for m, _ in _models_in(Manifest.model_fields["datasets"].annotation)}
