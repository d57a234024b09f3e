"""The serving document: everything a deployment needs besides the network, written into an
exported ONNX file's metadata (key `featcache.serving`) and as JSON beside any exported file
(STEM.recipe.json). docs/deployment.md describes it for people who serve the file without
featcache.

  format    "featcache-serving/1"
  input     the network's input: name, layout, size S, channels, value range, and how an image
            becomes it (stretched to S x S by antialiased bilinear resizing, grey replicated to
            3 channels, RGB averaged to 1); the per-channel normalisation is inside the network
  outputs   name -> what it holds: the mask logits ("logits": sigmoid for one class, softmax over
            background + classes otherwise) and each classifier's logits ("class_logits.<dataset>",
            softmax), with their class names
  recipes   dataset -> its input recipe (data/recipe.py): how a file of that dataset is read,
            scaled, sliced and turned, and the label values a prediction is written in
  threshold the foreground probability a binary mask is cut at by default
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from featcache.data.recipe import Recipe
from featcache.errors import ConfigError
from featcache.evaluate.run_classes import RunClasses
from featcache.manifest import StudentConfig

FORMAT = "featcache-serving/1"
METADATA_KEY = "featcache.serving"
MASK_OUTPUT = "logits"
RESIZE = ("stretched to size x size: bilinear with antialiasing (a triangle filter widened by the "
          "scale when shrinking, as PIL and torch's antialias=True do); grey replicated to 3 channels, "
          "RGB averaged to 1")


def class_output(head: str) -> str:
    return f"class_logits.{head}"


def serving_document(config: StudentConfig, image_size: int, recipes: dict[str, Recipe],
                     classes: RunClasses, threshold: float = 0.5) -> dict[str, Any]:
    k = int(config.mask_classes)
    mask = {"head": "mask", "activation": "sigmoid" if k == 1 else "softmax",
            "classes": list(classes.mask or ("foreground",)), "segments": classes.segments}
    heads = {class_output(h): {"head": h, "activation": "softmax", "classes": list(classes.heads[h])}
             for h in sorted(config.classifiers)}
    return {"format": FORMAT,
            "input": {"name": "image", "layout": "B C S S", "size": int(image_size),
                      "channels": int(config.in_channels), "range": [0.0, 1.0], "resize": RESIZE,
                      "normalisation": "inside the network"},
            "outputs": {MASK_OUTPUT: mask, **heads},
            "recipes": {name: r.to_dict() for name, r in recipes.items()},
            "threshold": threshold}


def document_path(model: Path) -> Path:
    """Where the JSON copy sits: student.onnx -> student.recipe.json."""
    return Path(model).with_name(Path(model).stem + ".recipe.json")


def write_document(model: Path, document: dict[str, Any]) -> Path:
    path = document_path(model)
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


def check_document(document: Any, source: str) -> dict[str, Any]:
    """A serving document as read from a file; one that is not one is a one-line error."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise ConfigError(f"{source}: holds no featcache serving document (format {found!r}, expected "
                          f"{FORMAT!r}); export the model with `featcache export`")
    return document


def document_recipes(document: dict[str, Any]) -> dict[str, Recipe]:
    return {name: Recipe.from_dict(r) for name, r in document["recipes"].items()}


def document_classes(document: dict[str, Any]) -> RunClasses:
    mask = document["outputs"][MASK_OUTPUT]
    heads = {o["head"]: tuple(o["classes"]) for name, o in document["outputs"].items() if name != MASK_OUTPUT}
    names = tuple(mask["classes"])
    return RunClasses(names if mask["activation"] == "softmax" else None, heads, bool(mask["segments"]))
