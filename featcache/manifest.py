"""Manifests, the recipe of both stages: YAML read with yaml.safe_load into pydantic models that
reject unknown keys. `--set key.path=value` overrides any field; the value is parsed as YAML (so
`3`, `false`, `[a, b]` work) — data only, never code."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from featcache.errors import ConfigError
from featcache.yamlconfig import read_yaml, safe_load, validation_message


class _Strict(BaseModel):
    # strict: `epochs: true` or `lr: "0.1"` are errors, not 1 and 0.1; floats must be finite.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class DatasetSpec(_Strict):
    name: str
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"


class TeacherSpec(_Strict):
    name: str  # the registry name (litemedsam, sam, timm, ...)
    # What runs, tables and reports call this teacher; needed when two teachers share a registry
    # name (DINOv2 and RETFound both through timm). Default: the registry name.
    alias: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    entry: str = "auto"  # a store key, or "auto": the one complete entry for this teacher + dataset
    # teacher level -> the student stage(s) it is matched from ("dec3", or [enc4, dec3]: several taps)
    levels: dict[str, str | list[str]]
    # Used only by `featcache extract --manifest` to build the teacher; distillation never does.
    checkpoint: str | None = None
    arch: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


    @property
    def label(self) -> str:
        """The teacher's name in this manifest: its alias, else its registry name."""
        return self.alias or self.name

    def taps(self) -> list[tuple[str, str]]:
        """(level, student stage) pairs, in manifest order."""
        return [(level, stage) for level, stages in self.levels.items()
                for stage in ([stages] if isinstance(stages, str) else stages)]

    @field_validator("levels")
    @classmethod
    def _some_stage(cls, v: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        empty = [level for level, stages in v.items() if not stages]
        if empty:
            raise ValueError(f"level(s) {empty} name no student stage; e.g. {{{empty[0]}: dec3}}")
        return v


class StudentConfig(_Strict):
    """The student: what a manifest's `student:` asks for and what every checkpoint stores (there
    with the input normalisation resolved). ImageNet-pretrained EfficientNet-Lite0 (weights shipped
    by a pip package) + U-Net decoder, 8.75M parameters."""

    encoder: str = "efficientnet_lite0"  # a timm name; efficientnet_lite0 = timm's tf_efficientnet_lite0
    in_channels: int = Field(3, ge=1)
    decoder_channels: list[int] = Field(default_factory=lambda: [464, 232, 116, 58, 29])
    # "imagenet" (weights a pip package ships), a local state-dict file, or null (random init).
    # Never downloads.
    encoder_weights: str | None = "imagenet"
    # The input size S (images are resized to S x S); a multiple of the encoder's stride (checked
    # when the student is built). The network itself takes any multiple of its stride.
    image_size: int = Field(256, gt=0)
    # Per-channel input normalisation, (x - mean) / std on [0, 1] images; null = the encoder's own
    # (timm's pretrained config for the architecture), fixed when the student is built.
    input_mean: list[float] | None = None
    input_std: list[float] | None = None
    # Foreground classes of the mask decoder: 1 = binary (one sigmoid channel); K >= 2 = K + 1
    # softmax channels (0 = background, k = class k of the dataset's `classes`).
    mask_classes: int = Field(1, ge=1)
    # Classification heads on the last encoder stage: dataset name -> number of classes. The
    # trainer fills both from the datasets; users normally leave them unset.
    classifiers: dict[str, int] = Field(default_factory=dict)

    @field_validator("classifiers")
    @classmethod
    def _two_classes_or_more(cls, v: dict[str, int]) -> dict[str, int]:
        few = sorted(name for name, n in v.items() if n < 2)
        if few:
            raise ValueError(f"classifier {few[0]!r} needs at least 2 classes, got {v[few[0]]}")
        return v

    @model_validator(mode="after")
    def _one_value_per_channel(self) -> StudentConfig:
        for name in ("input_mean", "input_std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.in_channels:
                raise ValueError(f"{name} needs {self.in_channels} values (in_channels), got {len(value)}")
        return self

    @model_serializer(mode="wrap")
    def _unresolved_normalisation_unwritten(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A manifest that leaves the normalisation to the encoder, or a binary student without
        # classification heads, dumps as it did before those fields existed, so saved manifests,
        # checkpoints and feature-pretraining recipes still compare equal.
        data = handler(self)
        for name in ("input_mean", "input_std"):
            if data.get(name, ...) is None:
                del data[name]
        if data.get("mask_classes", ...) == 1:
            del data["mask_classes"]
        if data.get("classifiers", ...) == {}:
            del data["classifiers"]
        return data


class DistillSpec(_Strict):
    enabled: bool = True  # false = plain supervised baseline (teachers ignored)
    normalisation: Literal["standardize", "phis", "none"] = "standardize"
    teacher_gate: Literal["adaptive", "uniform"] = "adaptive"
    gate_hidden: int = 128
    gate_balance_weight: float = 0.1  # regulariser against collapse onto one teacher
    # Softness of the relevance target the gate learns: weights proportional to
    # probe_loss^(-1/T), so T=0.25 turns a 4:3 probe-loss ratio into about 3:1 weights.
    gate_temperature: float = Field(0.25, gt=0)
    # "paper": fixed weights as the paper's code trains (task 0.94, feature 0.01, output 0.05, the
    # reconstruction 0.01 like the feature term), beside the learned gate.
    loss_gate: Literal["uncertainty", "fixed", "paper"] = "uncertainty"
    # Uncertainty weighting's learned weights exp(-s) are kept within [1/max, max]: unbounded, each
    # weight tends to 1/L, so the easiest term (the reconstruction) would take over.
    loss_gate_max_weight: float = Field(4.0, ge=1.0)
    loss_weights: dict[str, float] = Field(
        default_factory=lambda: {"seg": 1.0, "feat": 1.0, "recon": 0.5})
    # Projectors and return decoder: "separable" (depthwise 3x3 + 1x1s, cheap) or "conv3x3"
    # (the paper's Conv3x3-BN-ReLU-Conv1x1; several times the FLOPs).
    projector: Literal["separable", "conv3x3"] = "separable"
    return_decoder: bool = True
    # Whether the reconstruction loss may move the student's own features (through the projector's
    # input), as in the paper, or only the projector and return decoder (a second projector pass
    # on the detached stage). See the README's ablation for what it changed.
    recon_to_student: bool = True
    # Where student and teacher meet when the teacher's grid is finer than the student stage:
    # "coarser" averages the teacher down to the stage (4x fewer values for 64x64 vs 32x32);
    # "teacher" upsamples the projection to the teacher's grid, as the paper and RADIO do.
    feature_grid: Literal["coarser", "teacher"] = "coarser"
    feature_loss: Literal["mse", "cosine_l1"] = "cosine_l1"
    # Output distillation: a probe per tap fitted on the labelled training items' cached features
    # (probe_steps full passes), its predictions the soft labels the student's probabilities match
    # at a temperature decaying linearly from output_temperature[0] to [1] (the paper: 4 -> 1).
    output: bool = False
    output_temperature: list[float] = Field(default_factory=lambda: [4.0, 1.0], min_length=2, max_length=2)
    probe_steps: int = Field(200, ge=1)
    # "mse" on probabilities (the paper's code) or "kl" (the teachers' soft labels against the
    # student's, times T^2 as in Hinton et al.: its gradient does not vanish where the student is
    # confident and wrong, as MSE's does).
    output_loss: Literal["mse", "kl"] = "mse"
    # Confidence masking of the soft labels (as FixMatch thresholds pseudo-labels): only mask cells
    # where the teachers' mixed probability at T = 1 is at least this sure (max(p, 1 - p) for a
    # binary mask, the top class otherwise) enter the output term. A probe fitted on a few
    # images extrapolates badly to images unlike them, and is mostly unsure there. 0 = every cell.
    output_confidence: float = Field(0.0, ge=0, lt=1)
    # Which probes teach: "all" (at each student stage, its teachers' probes mixed by the gate) or
    # "best": the one probe that scores highest on the validation split (its mask's Dice at the
    # mask's resolution, its classes' accuracy) teaches alone. Every probe's score is in
    # RUN/probes.csv. Probes on a teacher's native grid (feature_grid: teacher) see what a coarse
    # grid averages away.
    output_probes: Literal["all", "best"] = "all"
    # Semi-supervised training: this many unlabelled images join every training batch: the train
    # split's images that training.train_fraction leaves out of the labelled set (their masks are
    # never used). They train on the teachers' signals alone: the feature terms and, with output,
    # the probes' soft labels. The labelled draw, epochs and schedule stay as without them, so a
    # run with and without is a paired comparison. 0 = off; no effect without teachers or a
    # self_teacher.
    unlabelled_batch: int = Field(0, ge=0)
    # How far output distillation trusts each probe (distill/trust.py): "validation" weighs a
    # teaching probe by how much better it scores on the validation split than the student does at
    # its best validation so far: 1 when at least output_trust_margin better, falling linearly to 0
    # where the student is as good (a probe worse than its student teaches nothing); "fixed":
    # every probe always teaches with weight 1.
    output_trust: Literal["validation", "fixed"] = "validation"
    output_trust_margin: float = Field(0.05, gt=0, le=1)
    # The teacher-free semi-supervised baseline (distill/mean_teacher.py): "mean_teacher" teaches
    # the student with an exponential moving average of itself (decay self_teacher_decay) on the
    # labelled and the unlabelled_batch images, by the output term's loss and temperature. It
    # reads no teacher: it needs enabled: false.
    self_teacher: Literal["none", "mean_teacher"] = "none"
    self_teacher_decay: float = Field(0.99, gt=0, lt=1)
    # The fraction of the run's steps over which the mean teacher's consistency weight rises from
    # 0 to 1 along exp(-5 (1 - t)^2), as the mean teacher's authors and SSL4MIS ramp it (its early
    # averages are of a student that has not learnt the task yet). 0: full weight from the start.
    self_teacher_rampup: float = Field(1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _self_teacher_alone(self) -> DistillSpec:
        if self.self_teacher != "none" and self.enabled:
            raise ValueError("distill.self_teacher is the teacher-free baseline: set distill.enabled: "
                             "false with it (it reads no teacher)")
        return self

    @field_validator("loss_weights")
    @classmethod
    def _known_terms(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - {"seg", "cls", "feat", "recon", "out"}
        if unknown:
            raise ValueError(f"unknown loss term(s) {sorted(unknown)}; use seg, cls, feat, recon, out")
        negative = sorted(term for term, weight in v.items() if weight < 0)
        if negative:  # a negative weight maximises its term: the loss falls without bound
            raise ValueError(f"weight of {negative[0]} is {v[negative[0]]}; loss weights must be >= 0 "
                             "(0 switches a term off)")
        return v


class AugmentSpec(_Strict):
    """Online photometric augmentation of the student's input (training only). Geometry never
    changes, so cached teacher features stay aligned; geometric variety comes from stored views.
    Each operation is applied with probability p, its strength drawn uniformly up to the bound."""

    enabled: bool = True
    p: float = Field(0.5, ge=0, le=1)
    brightness: float = Field(0.1, ge=0)  # additive shift within ±brightness
    contrast: float = Field(0.25, ge=0, lt=1)  # scale about the mean within 1 ± contrast
    gamma: float = Field(0.4, ge=0)  # exponent within exp(±gamma)
    noise: float = Field(0.03, ge=0)  # Gaussian noise std up to this
    blur: float = Field(1.0, ge=0)  # Gaussian blur sigma up to this, in student pixels


class TrainingSpec(_Strict):
    """Training loop settings (batch_size is per process under torchrun)."""

    epochs: int = Field(20, ge=1)
    # The run's length in optimizer steps; when set it decides the number of epochs
    # (ceil(steps / steps per epoch)), so arms with different data sizes train equally long.
    steps: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    # How batches mix the datasets of a run: "mixed" (each batch drawn from all of them, about
    # equal shares), "per_dataset" (each batch one dataset's, the datasets taking turns: the
    # paper's way; see distill/task_batches.py), or "auto": per_dataset when the datasets have
    # different tasks (segmentation beside classification), mixed otherwise. One dataset: the same.
    batches: Literal["auto", "mixed", "per_dataset"] = "auto"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: int = Field(1, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    amp: bool = False
    seed: int = Field(42, ge=0, lt=2**32)  # numpy's generators take seeds in [0, 2**32)
    views: Annotated[int, Field(ge=1)] | Literal["all"] = "all"
    train_fraction: float = Field(1.0, gt=0, le=1)  # low-data regime: keep this share of train
    # DataLoader processes reading the store ahead of the student; "auto" = min(4, CPUs per rank - 1).
    # Items are deterministic (stored views are replayed), so this never changes the results.
    num_workers: int | Literal["auto"] = "auto"
    prefetch_factor: int = Field(4, ge=1)  # batches each worker keeps ready
    # "low": workers run at the lowest CPU priority (nice 19) and fill the gaps the training
    # threads leave: a few percent faster on a CPU box that runs nothing else, far slower when
    # anything else runs beside it (the worker starves). "auto" = "normal".
    worker_priority: Literal["auto", "normal", "low"] = "auto"
    # Teacher targets held in memory, decoded once before the first step (each batch then a
    # gather): "auto" = a teacher's fit in half of the free GPU memory (training on a GPU) or RAM;
    # a size in GiB caps them (never above what is free); "off" reads the store every step. The
    # same numbers either way.
    resident_features: float | Literal["auto", "off"] = "auto"
    # Batch norm's running statistics recomputed with the current weights before each validation,
    # over this many training images (labelled and unlabelled, a fixed seeded draw, no
    # augmentation): what is validated, saved and served is the network as trained
    # (distill/precise_bn.py). 0 keeps the moving averages of training.
    precise_bn: int = Field(256, ge=0)
    device: str = "auto"
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    # Experiment logs: csv (metrics.csv, gates.csv) and, with the tensorboard extra, TensorBoard
    # events in run_dir/tensorboard/ (loss terms and weights, gates, val Dice, overlays per epoch).
    log: list[Literal["csv", "tensorboard"]] = Field(default_factory=lambda: ["csv"])

    @field_validator("resident_features")
    @classmethod
    def _positive_size(cls, v: float | str) -> float | str:
        if not isinstance(v, str) and not v > 0:
            raise ValueError("use a size in GiB > 0, auto or off")
        return v

    @field_validator("log")
    @classmethod
    def _keeps_csv(cls, v: list[str]) -> list[str]:
        # The report, eval and --resume read metrics.csv and gates.csv: they cannot be switched off.
        if "csv" not in v:
            raise ValueError("must include csv (the report and --resume read metrics.csv); "
                             "e.g. [csv, tensorboard]")
        return v


class PretrainSpec(_Strict):
    """Feature pretraining: before the labelled training, the student learns to predict the
    teachers' cached features on these datasets (their train_split; masks are never read), with
    the same heads. Teachers need no labels, so a few labelled images can sit in hundreds of
    unlabelled ones. steps 0 = off."""

    datasets: list[DatasetSpec] = Field(default_factory=list)
    steps: int = Field(0, ge=0)
    lr: float | None = Field(None, gt=0)  # None: training.lr
    batch_size: int | None = Field(None, ge=1)  # None: training.batch_size

class Manifest(_Strict):
    store: str | None = None  # None: $FEATCACHE_STORE or ./featcache-store
    run_dir: str = "runs/run"
    datasets: list[DatasetSpec] = Field(min_length=1)
    teachers: list[TeacherSpec] = Field(default_factory=list)
    student: StudentConfig = Field(default_factory=StudentConfig)
    distill: DistillSpec = Field(default_factory=DistillSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    pretrain: PretrainSpec = Field(default_factory=PretrainSpec)

    @field_validator("teachers")
    @classmethod
    def _distinct_labels(cls, v: list[TeacherSpec]) -> list[TeacherSpec]:
        labels = [t.label for t in v]
        twice = sorted({x for x in labels if labels.count(x) > 1})
        if twice:
            raise ValueError(f"teacher {twice[0]!r} appears twice; give each an `alias:` "
                             "(e.g. alias: dinov2 and alias: retfound for two timm teachers)")
        return v


STUDY_SECTION = "study"
OVERRIDE = ("override",)  # the field errors about an override name (the CLI's --set)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = data
    for part in parts[:-1]:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise ConfigError(f"override {dotted}: {part!r} does not lead to a mapping", fields=OVERRIDE)
    last = parts[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override {dotted}: cannot set {last!r} here", fields=OVERRIDE)


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.path=value", fields=OVERRIDE)
        try:
            parsed.append((key.strip(), safe_load(raw)))
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: the value is not valid YAML", fields=OVERRIDE) from None
    return parsed


def apply_overrides(data: dict[str, Any], pairs: Iterable[tuple[str, Any]]) -> None:
    """Set each dotted key.path of the manifest data to its value, in order (as `--set` does)."""
    for key, value in pairs:
        _set_path(data, key, value)


def manifest_from_dict(data: Any, source: str, overrides: list[str] | None = None) -> Manifest:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a manifest must be a YAML mapping, got {type(data).__name__}")
    apply_overrides(data, parse_overrides(overrides or []))
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {validation_message(exc)}") from None


# Settings whose default changed how runs train: a run saved without the key trained the old way.
_TRAINED_BEFORE = {"training": {"precise_bn": 0}}


def _as_trained(saved: Any) -> Any:
    """A saved manifest with the settings it predates filled in as that run trained (not with
    today's defaults), so a run from before precise BN never passes for one with it."""
    if not isinstance(saved, dict):
        return saved
    out = dict(saved)
    for section, keys in _TRAINED_BEFORE.items():
        if isinstance(out.get(section), dict):
            out[section] = {**keys, **out[section]}
    return out


def same_settings(saved: Any, manifest: Manifest) -> bool:
    """Whether a manifest saved with a run (as it was dumped then) asks for what `manifest` asks
    for. The saved one is read through today's schema, so a setting added since then takes its
    default instead of making every older run look different; one that no longer exists does."""
    saved = _as_trained(saved)
    try:
        then = Manifest.model_validate(saved)
    except ValidationError:
        return False
    # Where the run logs to, or whether its features are resident, changes no result: switching
    # TensorBoard on for a resume is fine.
    ignore = {"training": {"log", "resident_features"}}
    return then.model_dump(mode="json", exclude=ignore) == manifest.model_dump(mode="json", exclude=ignore)


def relative_roots(data: Any, base: Path) -> Any:
    """Dataset roots written relative (`root: data/BUSI`) are relative to the folder of the file
    that names them, as every config-driven tool reads paths, so a manifest works from any
    working directory; absolute roots and roots already resolved are unchanged. Applies to
    `datasets` and `pretrain.datasets` (the manifest's data, before validation)."""
    if not isinstance(data, dict):
        return data
    pretrain = data.get("pretrain")
    for specs in (data.get("datasets"), pretrain.get("datasets") if isinstance(pretrain, dict) else None):
        for spec in specs if isinstance(specs, list) else []:
            root = spec.get("root") if isinstance(spec, dict) else None
            if isinstance(root, str) and root and not Path(root).expanduser().is_absolute():
                spec["root"] = str(Path(base).resolve() / root)
    return data


def load_manifest(path: str | Path, overrides: list[str] | None = None) -> Manifest:
    path = Path(path)
    data = relative_roots(read_yaml(path, "manifest", "see manifests/ for examples"), path.parent)
    if isinstance(data, dict):
        # `featcache study`'s own section (featcache/study/spec.py): the rest is a manifest that
        # distill and extract read as usual.
        data = {k: v for k, v in data.items() if k != STUDY_SECTION}
    return manifest_from_dict(data, str(path), overrides)
