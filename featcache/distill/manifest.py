"""Distillation manifests: YAML read with yaml.safe_load into pydantic models that reject unknown
keys. `--set key.path=value` overrides any field; the value is parsed as YAML (so `3`, `false`,
`[a, b]` work) — data only, never code."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from featcache.errors import ConfigError
from featcache.yamlconfig import read_yaml, validation_message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    name: str
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"


class TeacherSpec(_Strict):
    name: str
    entry: str = "auto"  # a store key, or "auto": the one complete entry for this teacher + dataset
    levels: dict[str, str]  # teacher level -> student stage it is matched from
    # Used only by `featcache extract --manifest` to build the teacher; distillation never does.
    checkpoint: str | None = None
    arch: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class StudentSpec(_Strict):
    encoder: str = "efficientnet_b0"
    in_channels: int = 3
    decoder_channels: list[int] = Field(default_factory=lambda: [432, 216, 108, 54, 27])
    encoder_weights: str | None = None
    image_size: int = 256


class DistillSpec(_Strict):
    enabled: bool = True  # false = plain supervised baseline (teachers ignored)
    normalisation: Literal["standardize", "phis", "none"] = "standardize"
    teacher_gate: Literal["adaptive", "uniform"] = "adaptive"
    gate_hidden: int = 128
    gate_balance_weight: float = 0.1  # regulariser against collapse onto one teacher
    # Softness of the relevance target the gate learns: weights proportional to
    # probe_loss^(-1/T), so T=0.25 turns a 4:3 probe-loss ratio into about 3:1 weights.
    gate_temperature: float = Field(0.25, gt=0)
    loss_gate: Literal["uncertainty", "fixed"] = "uncertainty"
    loss_weights: dict[str, float] = Field(
        default_factory=lambda: {"seg": 1.0, "feat": 1.0, "recon": 0.5})
    # Projectors and return decoder: "separable" (depthwise 3x3 + 1x1s, cheap) or "conv3x3"
    # (the paper's Conv3x3-BN-ReLU-Conv1x1; several times the FLOPs).
    projector: Literal["separable", "conv3x3"] = "separable"
    return_decoder: bool = True
    # Where student and teacher meet when the teacher's grid is finer than the student stage:
    # "coarser" averages the teacher down to the stage (4x fewer values for 64x64 vs 32x32);
    # "teacher" upsamples the projection to the teacher's grid, as the paper and RADIO do.
    feature_grid: Literal["coarser", "teacher"] = "coarser"
    feature_loss: Literal["mse", "cosine_l1"] = "cosine_l1"

    @field_validator("loss_weights")
    @classmethod
    def _known_terms(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - {"seg", "feat", "recon"}
        if unknown:
            raise ValueError(f"unknown loss term(s) {sorted(unknown)}; use seg, feat, recon")
        return v


class TrainingSpec(_Strict):
    """Training loop settings (batch_size is per process under torchrun)."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = Field(1, ge=0)
    grad_clip: float = 1.0
    amp: bool = False
    seed: int = 42
    views: int | Literal["all"] = "all"
    train_fraction: float = Field(1.0, gt=0, le=1)  # low-data regime: keep this share of train
    # DataLoader processes reading the store ahead of the student; "auto" = min(4, CPUs per rank - 1).
    # Items are deterministic (stored views are replayed), so this never changes the results.
    num_workers: int | Literal["auto"] = "auto"
    prefetch_factor: int = Field(4, ge=1)  # batches each worker keeps ready
    # "low": workers run at the lowest CPU priority (nice 19) and fill the gaps the training
    # threads leave; "auto": low when training on the CPU, normal on an accelerator, where the
    # workers must keep pace with the device.
    worker_priority: Literal["auto", "normal", "low"] = "auto"
    device: str = "auto"


class Manifest(_Strict):
    store: str | None = None  # None: $FEATCACHE_STORE or ./featcache-store
    run_dir: str = "runs/run"
    datasets: list[DatasetSpec] = Field(min_length=1)
    teachers: list[TeacherSpec] = Field(default_factory=list)
    student: StudentSpec = Field(default_factory=StudentSpec)
    distill: DistillSpec = Field(default_factory=DistillSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = data
    for part in parts[:-1]:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {dotted}: {part!r} does not lead to a mapping")
    last = parts[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"--set {dotted}: cannot set {last!r} here")


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        try:
            parsed.append((key.strip(), yaml.safe_load(raw)))
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
    return parsed


def manifest_from_dict(data: Any, source: str, overrides: list[str] | None = None) -> Manifest:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a manifest must be a YAML mapping, got {type(data).__name__}")
    for key, value in parse_overrides(overrides or []):
        _set_path(data, key, value)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {validation_message(exc)}") from None


def same_settings(saved: Any, manifest: Manifest) -> bool:
    """Whether a manifest saved with a run (as it was dumped then) asks for what `manifest` asks
    for. The saved one is read through today's schema, so a setting added since then takes its
    default instead of making every older run look different; one that no longer exists does."""
    try:
        then = Manifest.model_validate(saved)
    except ValidationError:
        return False
    return then.model_dump(mode="json") == manifest.model_dump(mode="json")


def load_manifest(path: str | Path, overrides: list[str] | None = None) -> Manifest:
    path = Path(path)
    data = read_yaml(path, "manifest", "see manifests/ for examples")
    return manifest_from_dict(data, str(path), overrides)
