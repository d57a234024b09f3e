"""dataset.json and option parsing for the `msd` loader, and discovery of its volume pairs.

dataset.json follows the Decathlon form ({"modality": {"0": "CT"}, "labels": {"0": "background",
"1": "spleen"}}); the nnU-Net v2 form ({"channel_names": {...}, "labels": {"background": 0}}) is
read too, since many converted datasets use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featcache.data.base import assign_splits, safe_id
from featcache.data.files import FileProblem
from featcache.data.volumes import DEFAULT_CT_WINDOW, nifti_stem, read_header
from featcache.errors import DatasetError

EMPTY_POLICIES = ("balanced", "all", "none")
Classes = tuple[tuple[int, ...], ...] | None  # label values of each foreground class; None = any


@dataclass(frozen=True)
class Volume:
    id: str
    image: Path
    label: Path
    spacing: tuple[float, ...]  # mm per voxel along the 3 spatial axes


@dataclass(frozen=True)
class MSDConfig:
    task: str
    modalities: tuple[str, ...]  # one name per channel of the image volumes
    declared_labels: dict[int, str]
    axis: int
    channel: int
    classes: Classes  # mask value k + 1 = the labels in classes[k]; None = binary, any foreground
    window: tuple[float, float] | None  # None = percentile scaling
    percentiles: tuple[float, float]
    empty_slices: str | float

    @property
    def modality(self) -> str:
        return self.modalities[self.channel] if self.channel < len(self.modalities) else "unknown"

    @property
    def foreground(self) -> tuple[int, ...] | None:
        """Every label value of a class, sorted (None: any label > 0): what counts as foreground."""
        return None if self.classes is None else tuple(sorted(v for c in self.classes for v in c))

    @property
    def class_names(self) -> tuple[str, ...]:
        return class_names(self.classes, self.declared_labels)

    @property
    def is_ct(self) -> bool:
        return self.modality.upper() == "CT"


def read_dataset_json(path: Path) -> dict[str, Any]:
    """A Decathlon or nnU-Net dataset.json as a dict; unreadable or not an object: one line."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read dataset.json ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: dataset.json must hold a JSON object")
    return data


def declared_labels(data: dict[str, Any], path: Path) -> dict[int, str]:
    """dataset.json's `labels` as {value: name}, in the Decathlon or the nnU-Net v2 form."""
    raw = data.get("labels", {})
    try:
        if raw and all(isinstance(v, int) for v in raw.values()):  # nnU-Net v2: name -> value
            return {int(v): str(k) for k, v in raw.items()}
        return {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError, AttributeError):
        raise DatasetError(f"{path}: 'labels' must map label values to names") from None


def _label_value(item: Any, declared: dict[int, str], loader: str) -> int:
    """A label given as its value (2, '2') or its dataset.json name ('tumour') -> its value."""
    by_name = {name.lower(): value for value, name in declared.items()}
    if isinstance(item, str) and item.lower() in by_name:
        return by_name[item.lower()]
    if isinstance(item, int) and not isinstance(item, bool):
        return item
    if isinstance(item, str) and item.isdigit():
        return int(item)
    known = ", ".join(f"{v}={n}" for v, n in sorted(declared.items()))
    raise DatasetError(f"{loader}: unknown label {item!r}; known: {known}")


def resolve_classes(given: Any, declared: dict[int, str], loader: str = "msd") -> Classes:
    """The `labels` option -> the label values of each class; None = binary, any foreground.

    A label (value or dataset.json name) is one class; a list, classes 1..K in its order; a list
    inside the list, labels merged into one class ([[1, 2]]). A label in two classes, background or
    an empty group is an error."""
    if given is None:
        return None
    items = list(given) if isinstance(given, (list, tuple)) else [given]
    classes = []
    for item in items:
        group = item if isinstance(item, (list, tuple)) else [item]
        classes.append(tuple(sorted({_label_value(v, declared, loader) for v in group})))
    values = [v for c in classes for v in c]
    if not classes or not all(classes) or 0 in values:
        raise DatasetError(f"{loader}: labels must name foreground classes (not 0 / background)")
    if len(set(values)) != len(values):
        twice = next(v for v in values if values.count(v) > 1)
        raise DatasetError(f"{loader}: label {twice} is in two classes of labels {given!r}; a pixel "
                           "has one class")
    return tuple(classes)


def stored_labels(classes: Classes) -> Any:
    """How `labels` is stored in the dataset options (and so hashed by the fingerprint).

    One class keeps the form binary datasets always had (the sorted values: [1], [1, 2]), so their
    fingerprints and feature caches stay; several classes are a list of lists, which no binary
    dataset ever stored, so a multi-class dataset never shares a fingerprint with a binary one."""
    if classes is None:
        return None
    if len(classes) == 1:
        return list(classes[0])
    return [list(c) for c in classes]


def class_names(classes: Classes, declared: dict[int, str]) -> tuple[str, ...]:
    """The foreground class names: dataset.json's names ('organ', 'organ+tumour' for a group)."""
    if classes is None:
        return ("foreground",)
    return tuple("+".join(declared.get(v, str(v)) for v in c) for c in classes)


def _pair_of_numbers(name: str, value: Any, loader: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DatasetError(f"{loader}: {name} must be two numbers [low, high], got {value!r}") from None
    if not lo < hi:
        raise DatasetError(f"{loader}: {name} needs low < high, got {value!r}")
    return lo, hi


def _empty_policy(value: Any, loader: str) -> str | float:
    if value in EMPTY_POLICIES:
        return str(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    raise DatasetError(f"{loader}: empty_slices must be one of {', '.join(EMPTY_POLICIES)} or a fraction in "
                       f"[0, 1], got {value!r}")


def read_config(root: Path, opts: dict[str, Any]) -> MSDConfig:
    """dataset.json + options -> MSDConfig; every bad option is one DatasetError line."""
    path = root / "dataset.json"
    data = read_dataset_json(path)
    key = "modality" if data.get("modality") else "channel_names"
    modalities = _modalities(data.get(key) or {"0": "unknown"}, path, key)
    declared = declared_labels(data, path)
    return slice_config("msd", str(data.get("name", root.name)), modalities, declared, opts,
                        resolve_classes(opts["labels"], declared))


def _modalities(raw: Any, path: Path, key: str) -> tuple[str, ...]:
    """The channel names in channel order: the Decathlon's {"0": "CT", "1": ...}, or a list
    (["CT"]) or one name ("CT") as some converted datasets write them."""
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, (list, tuple)) and raw and all(isinstance(m, str) for m in raw):
        return tuple(raw)
    if isinstance(raw, dict) and raw:
        keys = [k for k in raw if str(k).isdigit()]
        if len(keys) == len(raw) and sorted(int(k) for k in keys) == list(range(len(keys))):
            return tuple(str(raw[k]) for k in sorted(keys, key=int))
    raise DatasetError(f"{path}: key {key!r} must map channel numbers 0, 1, ... to names, e.g. "
                       f'{{"0": "CT"}} (or list them: ["CT"]), got {raw!r}')


def slice_config(loader: str, task: str, modalities: tuple[str, ...], declared: dict[int, str],
                 opts: dict[str, Any], classes: Classes) -> MSDConfig:
    """Check the slicing options (axis, channel, window, percentiles, empty_slices) -> MSDConfig;
    CT without a window gets the default one."""
    if opts["axis"] not in (0, 1, 2):
        raise DatasetError(f"{loader}: axis must be 0, 1 or 2, got {opts['axis']!r}")
    channel = opts["channel"]
    if not isinstance(channel, int) or not 0 <= channel < len(modalities):
        raise DatasetError(f"{loader}: channel must be 0..{len(modalities) - 1} "
                           f"({', '.join(modalities)}), got {channel!r}")
    window = None if opts["window"] is None else _pair_of_numbers("window", opts["window"], loader)
    lo, hi = _pair_of_numbers("percentiles", opts["percentiles"], loader)
    if lo < 0 or hi > 100:
        raise DatasetError(f"{loader}: percentiles must lie in [0, 100], got {opts['percentiles']!r}")
    config = MSDConfig(task, modalities, declared, opts["axis"], channel, classes, window, (lo, hi),
                       _empty_policy(opts["empty_slices"], loader))
    if config.window is None and config.is_ct:
        config = MSDConfig(**{**config.__dict__, "window": DEFAULT_CT_WINDOW})
    return config


def _pair_problem(image: Path, label: Path, config: MSDConfig) -> FileProblem | None:
    """Header-level checks (cheap): both readable, same spatial shape, channel exists."""
    try:
        ishape, _ = read_header(image)
        lshape, _ = read_header(label)
    except FileProblem as problem:
        return problem
    if len(lshape) != 3 or len(ishape) not in (3, 4):
        return FileProblem(label, f"expected a 3D label and a 3D/4D image, got {lshape} and {ishape}")
    if ishape[:3] != lshape:
        return FileProblem(label, f"NIfTI pair has different shapes: label {lshape}, image "
                                  f"{image.name} {ishape[:3]}")
    channels = ishape[3] if len(ishape) == 4 else 1
    if config.channel >= channels:
        return FileProblem(image, f"has {channels} channel(s); channel {config.channel} does not exist")
    return None


def discover(root: Path, config: MSDConfig, opts: dict[str, Any]
             ) -> tuple[list[Volume], list[FileProblem], dict[str, str]]:
    """-> (volumes in case order, pairing/header problems, {volume id: split})."""
    images = {nifti_stem(p): p for p in sorted((root / "imagesTr").iterdir()) if nifti_stem(p)}
    label_dir = root / "labelsTr"
    labels = {nifti_stem(p): p for p in sorted(label_dir.iterdir()) if nifti_stem(p)} \
        if label_dir.is_dir() else {}
    problems = [FileProblem(labels[s], f"label without an image in {root / 'imagesTr'}")
                for s in sorted(set(labels) - set(images))]
    volumes = []
    for stem in sorted(images):
        if stem not in labels:
            problems.append(FileProblem(images[stem], f"image without a label in {label_dir}"))
            continue
        problem = _pair_problem(images[stem], labels[stem], config)
        if problem:
            problems.append(problem)
            continue
        _, zooms = read_header(images[stem])
        volumes.append(Volume(safe_id(stem), images[stem], labels[stem], tuple(zooms[:3])))
    split_of = assign_splits([v.id for v in volumes], opts["seed"], opts["fractions"])
    return volumes, problems, split_of

