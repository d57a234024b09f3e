"""The study file of `pipelines/paper.py`: local datasets, local teacher checkpoints, one student.

Read with yaml.safe_load and validated with pydantic (unknown keys are rejected). `student`,
`distill` and `training` are the manifest sections of the same names (see featcache/manifest.py)
and are validated by building the distillation manifest at load time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from featcache.errors import ConfigError
from featcache.extract.settings import ExtractSettings
from featcache.manifest import Manifest, manifest_from_dict, relative_roots
from featcache.yamlconfig import read_yaml, validation_message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudyDataset(_Strict):
    name: str  # a registered dataset: busi, kvasir-seg, cvc-clinicdb, drive, msd, folder, demo
    label: str | None = None  # the name in tables (needed when a loader is used twice, e.g. two MSD tasks)
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def title(self) -> str:
        return self.label or self.name


class StudyTeacher(_Strict):
    name: str  # a registered teacher: sam, medsam, litemedsam, clip, timm
    alias: str | None = None  # its name in tables, needed when two teachers share a registry name
    arch: str | None = None
    checkpoint: str | None = None
    levels: dict[str, str | list[str]] = Field(min_length=1)  # teacher level -> student stage(s)
    options: dict[str, Any] = Field(default_factory=dict)


_DEFAULT = ExtractSettings()


class Extraction(_Strict):
    """The study file's `extraction:` section: the ExtractSettings a study may change."""

    views: int = Field(_DEFAULT.views, ge=1)
    precision: Literal["fp32", "fp16", "int8"] = _DEFAULT.precision
    device: str = _DEFAULT.device
    batch_size: int = Field(_DEFAULT.batch_size, ge=1)

    def settings(self) -> ExtractSettings:
        return ExtractSettings(views=self.views, precision=self.precision, device=self.device,
                               batch_size=self.batch_size)


class StudyConfig(_Strict):
    store: str | None = None  # None: $FEATCACHE_STORE or ./featcache-store
    out: str = "runs/paper"
    datasets: list[StudyDataset] = Field(min_length=1)
    teachers: list[StudyTeacher] = Field(min_length=1)
    extraction: Extraction = Field(default_factory=Extraction)
    student: dict[str, Any] = Field(default_factory=dict)
    distill: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)


def study_manifest(config: StudyConfig, run_dir: Path, source: str = "study config") -> Manifest:
    """The joint distillation manifest: every dataset, every teacher, the study's sections."""
    data = {"store": config.store, "run_dir": str(run_dir),
            "datasets": [d.model_dump(exclude={"label"}) for d in config.datasets],
            "teachers": [t.model_dump(exclude_none=True) for t in config.teachers],
            "student": dict(config.student), "distill": dict(config.distill),
            "training": dict(config.training)}
    return manifest_from_dict(data, source)


def load_study_config(path: str | Path) -> StudyConfig:
    """Read and validate a study file; the one-line error names the file and the key."""
    path = Path(path)
    data = relative_roots(read_yaml(path, "study config", "see manifests/paper-example.yaml"), path.parent)
    if not isinstance(data, dict):
        raise ConfigError(f"study config {path} must be a YAML mapping; see manifests/paper-example.yaml")
    try:
        config = StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"study config {path}: {validation_message(exc)}") from None
    _check_unique(config, path)
    study_manifest(config, Path(config.out) / "run", str(path))  # validates student/distill/training
    return config


def missing_paths(config: StudyConfig) -> list[str]:
    """Every dataset root and teacher checkpoint the study names that is not on this machine, as
    "datasets busi root /path": all of them, so a placeholder-filled file is fixed in one edit."""
    missing = [f"datasets {d.title} root {d.root}" for d in config.datasets
               if d.root is not None and not Path(d.root).exists()]
    missing += [f"teachers {t.alias or t.name} checkpoint {t.checkpoint}" for t in config.teachers
                if t.checkpoint is not None and not Path(t.checkpoint).exists()]
    return missing


def require_paths(config: StudyConfig, source: str = "study config") -> None:
    """Refuse a study whose roots or checkpoints are missing, naming every one of them."""
    missing = missing_paths(config)
    if missing:
        raise ConfigError(f"{source}: {len(missing)} path(s) do not exist on this machine; edit each "
                          f"(EDIT-ME marks the example's placeholders): {'; '.join(missing)}")


def _check_unique(config: StudyConfig, path: Path) -> None:
    titles = [d.title for d in config.datasets]
    dup = sorted({n for n in titles if titles.count(n) > 1})
    if dup:
        raise ConfigError(f"study config {path}: dataset {dup[0]!r} is listed twice; give each use "
                          "of a loader its own `label`")
    names = [t.name for t in config.teachers]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"study config {path}: teacher {dup[0]!r} is listed twice; the store finds "
                          "entries by teacher name, so list each teacher once")
