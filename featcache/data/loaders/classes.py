"""`classes`: any classification dataset laid out as one sub-folder per class (the ImageFolder
convention of torchvision): root/<class>/<image>.

Class names are the sub-folder names sorted alphabetically (label index = position; the dataset's
notes say so, and `featcache datasets check` prints them), unless the option `classes` lists
them: then that list is the order, a listed class without a folder is an error, and so is a
folder that is not listed (rename, remove or list it). `graded: true` declares the classes
ordered grades (in that order, so list them): evaluation then reports quadratic weighted kappa,
as for APTOS. It changes only the metrics, never the data, so it is not part of the fingerprint.
If root instead holds split folders `train/` and `val/` and/or `test/`, each with the class
sub-folders, those are the splits; otherwise splits are drawn by seed within each class. Images
are read as RGB unless channels=1. Hidden files and folders (.DS_Store, .ipynb_checkpoints) are
ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featcache.data.base import SPLITS, safe_id
from featcache.data.classified import ClassificationDataset, Labelled, stratified_entries
from featcache.data.files import list_images
from featcache.data.options import require_root, resolve_options
from featcache.errors import DatasetError

EXPECTED = "a folder with one sub-folder of images per class (root/<class>/<image>), or train/, " \
           "val/, test/ each holding those class folders"


class ClassFolders(ClassificationDataset):
    name = "classes"
    modality = "unspecified"
    channels = 3


class GreyClassFolders(ClassFolders):
    channels = 1


def _subfolders(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _class_order(found: list[str], given: Any, root: Path) -> tuple[str, ...]:
    """The classes in label order: `given` (a list of names) or the folder names sorted."""
    if given is None:
        return tuple(found)
    if not isinstance(given, (list, tuple)) or not all(isinstance(c, str) for c in given) or \
            len(set(given)) != len(given) or not given:
        raise DatasetError(f"classes: option classes must be a list of distinct folder names, got "
                           f"{given!r}")
    unknown = [c for c in given if c not in found]
    if unknown:
        raise DatasetError(f"classes: unknown class {unknown[0]!r}: no folder {root / unknown[0]}; "
                           f"folders: {', '.join(found)}")
    extra = [c for c in found if c not in given]
    if extra:
        raise DatasetError(f"classes: folder {root / extra[0]} is not one of the listed classes "
                           f"({', '.join(given)}); list it, or move it out of {root}")
    return tuple(given)


def _split_roots(root: Path) -> list[tuple[str | None, Path]]:
    """[(split, folder)] for a root holding split folders, else [(None, root)]."""
    present = [s for s in SPLITS if (root / s).is_dir()]
    if "train" in present and len(present) > 1:
        return [(s, root / s) for s in present]
    return [(None, root)]


def _collect(parts: list[tuple[str | None, Path]], classes: tuple[str, ...]
             ) -> tuple[list[Labelled], list[str | None]]:
    items, splits = [], []
    for split, folder in parts:
        for label, name in enumerate(classes):
            if not (folder / name).is_dir():
                continue  # a class may be absent from one split (e.g. rare in a small test set)
            for image in list_images(folder / name):
                items.append(Labelled(image, label))
                splits.append(split)
    return items, splits


SUMMARY = ("generic classification: one sub-folder per class (ImageFolder), optionally under "
           "train/ val/ test/; else split by seed within class")


def build_classes(root: Path | None, **options: Any) -> ClassFolders:
    opts = resolve_options("classes", options, {"classes": None, "channels": 3, "graded": False})
    if opts["channels"] not in (1, 3):
        raise DatasetError(f"classes: channels must be 1 or 3, got {opts['channels']!r}")
    graded = opts.pop("graded")  # how the labels are scored, not which data: not fingerprinted
    if not isinstance(graded, bool):
        raise DatasetError(f"classes: graded must be true or false, got {graded!r}")
    root = require_root("classes", root, EXPECTED)
    parts = _split_roots(root)
    found = sorted({name for _, folder in parts for name in _subfolders(folder)})
    if not found:
        raise DatasetError(f"classes: {root} does not have the expected layout (no class "
                           f"sub-folders); expected {EXPECTED}")
    classes = _class_order(found, opts["classes"], parts[0][1] if len(parts) == 1 else root)
    items, splits = _collect(parts, classes)
    if not items:
        raise DatasetError(f"classes: {root} does not have the expected layout (no images in its "
                           f"class folders {', '.join(classes)}); expected {EXPECTED}")
    # Ids from the path below root ('train/cat/0001.png' -> 'train_cat_0001'): names repeat
    # across class folders.
    ids = [safe_id(str(it.image.relative_to(root).with_suffix(""))) for it in items]
    official = [s for s in splits if s is not None] if parts[0][0] is not None else None
    entries = stratified_entries(ids, items, classes, root, opts, official)
    cls = ClassFolders if opts["channels"] == 3 else GreyClassFolders
    dataset = cls.build(entries, [], opts, classes)
    dataset.graded = graded
    if opts["classes"] is None:
        order = ", ".join(f"{k} {name}" for k, name in enumerate(classes))
        dataset.notes.append(f"class labels follow the folder names sorted alphabetically: {order}; "
                             "list them in the option `classes` for another order, and set "
                             "`graded: true` if they are ordered grades (kappa is then reported)")
    return dataset  # type: ignore[return-value]
