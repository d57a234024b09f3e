"""The input recipe: how one of a dataset's files becomes the student's input, and how a
prediction goes back onto that file's grid and label values.

Each dataset loader declares its recipe as data (`SegmentationDataset.recipe`); the trainer saves
it in every checkpoint beside the StudentConfig, and `featcache export` writes it beside the
model, as timm's `pretrained_cfg` and nnU-Net's plans travel with their weights. Training,
`eval`, `predict`, the Python API and the exported model all apply it through serving.py, so a
student is served the pixels it was trained on.

  reader      which registered reader opens the file ("image", "nifti", ...; readers.py)
  channels    2D images: 1 (greyscale, PIL "L"), 3 (RGB), or None (as stored, 1 or 3)
  channel     volumes: which channel (of a 4D file, or nnU-Net's _000c file) is read
  intensity   raw values -> [0, 1]: the file type's full range, a fixed window (CT in HU), or
              percentiles of the whole volume's reference voxels (MRI)
  slicing     volumes: the axis slices are taken along, after turning the voxels to `orientation`
              (axis codes such as "PRS", with nibabel's orientation tools), or in stored order
  labels      the label values of each class in the dataset's label files, and their names

The student's own input (its size S, the plain resize to S x S, grey replicated to its channels)
is the StudentConfig's; the two together are everything between a file and the network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from featcache.errors import ConfigError

FORMAT = "featcache-recipe/1"
INTENSITY_KINDS = ("file_range", "window", "percentiles")
REFERENCE_VOXELS = ("nonzero", "positive", "all")
AXIS_CODES = ("LR", "PA", "IS")  # each anatomical axis, both directions


@dataclass(frozen=True)
class Intensity:
    """Raw values -> [0, 1].

    file_range: the file type's full range (8-bit / 255, 16-bit / 65535), min-max for float data
    window: clip to [low, high] (e.g. CT in HU) and scale
    percentiles: clip to the [low, high] percentiles of the whole volume's `reference` voxels
      (nonzero: skull-stripped or padded background left out; positive: > 0; all) and scale
    """

    kind: str = "file_range"
    low: float | None = None
    high: float | None = None
    reference: str = "nonzero"

    def __post_init__(self) -> None:
        if self.kind not in INTENSITY_KINDS:
            raise ConfigError(f"recipe intensity {self.kind!r}: use one of {', '.join(INTENSITY_KINDS)}")
        if self.kind != "file_range" and not (self.low is not None and self.high is not None
                                             and self.low < self.high):
            raise ConfigError(f"recipe intensity {self.kind} needs low < high, got {self.low}, {self.high}")
        if self.reference not in REFERENCE_VOXELS:
            raise ConfigError(f"recipe intensity reference {self.reference!r}: use one of "
                              f"{', '.join(REFERENCE_VOXELS)}")


@dataclass(frozen=True)
class Slicing:
    """How a volume becomes 2D slices.

    orientation: axis codes the voxels are turned to before slicing ("PRS": rows run to
      posterior, columns to the right, slices to superior, which shows an axial slice of a RAS
      volume as radiologists' viewers do); None keeps the stored voxel order.
    assume: the axis codes the stored voxels are taken to have; None reads them from the file's
      affine. (Only runs from before recipes existed set it: they turned stored voxels the same
      way whatever the header said.)
    axis: the axis slices are taken along, after orientation; a slice's rows and columns are the
      two other axes, in order.
    """

    axis: int = 2
    orientation: str | None = None
    assume: str | None = None

    def __post_init__(self) -> None:
        if self.axis not in (0, 1, 2):
            raise ConfigError(f"recipe slicing axis must be 0, 1 or 2, got {self.axis!r}")
        for codes in (self.orientation, self.assume):
            if codes is not None and not _axis_codes(codes):
                raise ConfigError(f"recipe orientation {codes!r}: give three axis codes, one of each of "
                                  "L/R, P/A, I/S (e.g. RAS, PRS)")


def _axis_codes(codes: str) -> bool:
    return len(codes) == 3 and sorted(next((i for i, p in enumerate(AXIS_CODES) if c in p), -1)
                                      for c in codes) == [0, 1, 2]


@dataclass(frozen=True)
class Labels:
    """Class k + 1 of the student's label maps <-> the label values `values[k]` in the dataset's
    label files; values None: binary, any nonzero value is foreground. A prediction is written back
    with each class's first value (binary: 1 in NIfTI, 255 in PNG masks)."""

    names: tuple[str, ...] = ("foreground",)
    values: tuple[tuple[int, ...], ...] | None = None
    mask_mode: str = "auto"  # binary 2D mask files: see files.read_mask

    def __post_init__(self) -> None:
        if self.values is not None and len(self.values) != len(self.names):
            raise ConfigError(f"recipe labels: {len(self.names)} names for {len(self.values)} classes")


@dataclass(frozen=True)
class Recipe:
    reader: str
    channels: int | None = None
    channel: int = 0
    intensity: Intensity = field(default_factory=Intensity)
    slicing: Slicing | None = None
    labels: Labels = field(default_factory=Labels)
    task: str = "segmentation"  # or "classification": label files are not read

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples as lists)."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, data: Any) -> Recipe:
        """The inverse of to_dict; an unknown or missing key is one ConfigError line."""
        if not isinstance(data, dict):
            raise ConfigError(f"a recipe is a mapping, got {type(data).__name__}")
        parts = {"intensity": Intensity, "slicing": Slicing, "labels": Labels}
        values = {k: (_build(parts[k], v) if k in parts and v is not None else v) for k, v in data.items()}
        return _build(cls, values)


def _build(cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {cls.__name__.lower()} must be a mapping, got {data!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"recipe {cls.__name__.lower()}: unknown key {unknown[0]!r}; known: "
                          f"{', '.join(sorted(known))}")
    try:
        return cls(**{k: _tuples(v) for k, v in data.items()})
    except TypeError as exc:
        raise ConfigError(f"recipe {cls.__name__.lower()}: {exc}") from None


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
