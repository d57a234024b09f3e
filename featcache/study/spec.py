"""What `featcache study --manifest m.yaml` compares: the manifest's optional `study:` section.

    study:
      out: runs/study            # where runs, results.csv, table.md and study.png go
      arms:                      # each arm is the manifest with these overrides (dotted keys, as --set)
        - {name: student alone, overrides: {distill.enabled: false}}
        - {name: full method, overrides: {distill.enabled: true}}
      reference: student alone   # the arm every other one is paired against (default: the first)
      seeds: [0, 1, 2, 3, 4]
      label_fractions: [1.0, 0.1]  # training.train_fraction of each label regime
      test_sets:                 # other labelled data scored by every trained run
        - {name: orientation, title: coronal test, dataset: {name: demo, options: {planes: [coronal]}}}
      quick: {seeds: [0, 1], max_steps: 20, max_pretrain_steps: 20, arms: [student alone, full method]}

Without a `study:` section the arms are DEFAULT_ARMS. Arms are data: adding one is one entry.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from featcache.errors import ConfigError
from featcache.manifest import STUDY_SECTION, DatasetSpec, relative_roots
from featcache.yamlconfig import read_yaml, validation_message

# The default comparison for any manifest: the student alone, + feature distillation with the
# simplest weighting, + output distillation (task-adapted teacher probes' soft labels), and the full
# method (adaptive gates, learned loss weights, return decoder, output distillation).
_FEATURES = {"distill.enabled": True, "distill.teacher_gate": "uniform", "distill.loss_gate": "fixed",
             "distill.return_decoder": False}
# Arms override the manifest, not the arm before: each arm names everything it changes.
DEFAULT_ARMS: tuple[dict[str, Any], ...] = (
    {"name": "student alone", "overrides": {"distill.enabled": False}},
    {"name": "+ feature distillation", "overrides": {**_FEATURES, "distill.output": False}},
    {"name": "+ output distillation", "overrides": {**_FEATURES, "distill.output": True}},
    {"name": "full method",
     "overrides": {"distill.enabled": True, "distill.teacher_gate": "adaptive",
                   "distill.loss_gate": "uncertainty", "distill.return_decoder": True,
                   "distill.output": True}},
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def slug(name: str) -> str:
    """A folder-safe form of an arm's name ('+ feature distillation' -> 'feature-distillation')."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


class Arm(_Strict):
    name: str = Field(min_length=1)
    overrides: dict[str, Any] = Field(default_factory=dict)  # dotted manifest key -> value
    compared_to: str | None = None  # the arm it changes one thing of (default: the one before)

    @field_validator("name")
    @classmethod
    def _has_letters(cls, v: str) -> str:
        if not slug(v):
            raise ValueError(f"arm name {v!r} needs a letter or digit (it names the run folders)")
        return v


class TestSet(_Strict):
    """Labelled data no arm trains on, scored by every run's best checkpoint (RUN/eval-NAME/)."""

    __test__ = False  # not a pytest class
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    title: str | None = None  # the test's name in tables (default: "NAME test")
    dataset: DatasetSpec
    split: str = "test"

    @property
    def heading(self) -> str:
        return self.title or f"{self.name} test"


class QuickSpec(_Strict):
    """--quick: fewer seeds and every run capped at a few steps (a smoke test, not a result)."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=1)
    max_steps: int = Field(20, ge=1)  # training.steps is at most this (set to it when unset)
    max_pretrain_steps: int = Field(20, ge=1)  # pretrain.steps is at most this (0 stays 0)
    overrides: dict[str, Any] = Field(default_factory=dict)  # applied to every arm after its own
    arms: list[str] | None = None  # the arms to run by name (default: all; --arms chooses too)


class StudySpec(_Strict):
    out: str | None = None  # None: runs/study-<manifest file stem>
    arms: list[Arm] = Field(default_factory=lambda: [Arm.model_validate(a) for a in DEFAULT_ARMS],
                            min_length=1)
    reference: str | None = None  # None: the first arm
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1)
    label_fractions: list[float] = Field(default_factory=lambda: [1.0, 0.1], min_length=1)
    test_sets: list[TestSet] = Field(default_factory=list)
    quick: QuickSpec = Field(default_factory=QuickSpec)

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        check_arms(self.arms, self.reference)
        problem = runs_problem(self.seeds, self.label_fractions)
        if problem:
            raise ValueError(problem[1])
        known = [a.name for a in self.arms]
        missing = [name for name in self.quick.arms or [] if name not in known]
        if missing:
            raise ValueError(f"quick.arms: no arm is named {missing[0]!r}; the arms are {known}")
        names = [t.name for t in self.test_sets]
        if len(set(names)) < len(names):
            raise ValueError(f"test_sets: names must differ, got {names}")
        return self

    @property
    def reference_arm(self) -> str:
        return self.reference or self.arms[0].name


def check_arms(arms: list[Arm], reference: str | None) -> None:
    """Arm names (and their folders) distinct and every arm named present; ValueError naming the key."""
    names = [a.name for a in arms]
    slugs = [slug(n) for n in names]
    if len(set(slugs)) < len(slugs):
        raise ValueError(f"arms: names must differ (also as folder names {slugs})")
    for label, name in [("reference", reference)] + [(f"arm {a.name!r} compared_to", a.compared_to)
                                                      for a in arms]:
        if name is not None and name not in names:
            raise ValueError(f"{label}: no arm is named {name!r}; the arms are {names}")


def runs_problem(seeds: list[int], fractions: list[float]) -> tuple[str, str] | None:
    """(field, message) when seeds or label fractions cannot make a study, else None."""
    if not seeds or len(set(seeds)) < len(seeds):
        return "seeds", f"seeds: at least one, each once, got {seeds}"
    bad = [f for f in fractions if not 0 < f <= 1]
    if not fractions or bad or len(set(fractions)) < len(fractions):
        return "label_fractions", f"label_fractions: distinct values in (0, 1], got {fractions}"
    return None


def read_study(path: Path) -> tuple[dict[str, Any], StudySpec]:
    """(the manifest's data without its study section, the study section validated)."""
    data = relative_roots(read_yaml(path, "manifest", "see manifests/study-demo.yaml for an example"),
                          Path(path).parent)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a manifest must be a YAML mapping, got {type(data).__name__}")
    section = data.pop(STUDY_SECTION, None)
    arms = section.get("arms") if isinstance(section, dict) else None
    for arm in arms if isinstance(arms, list) else []:
        # an arm's own datasets are relative to the manifest's folder too, as the base's are
        relative_roots(arm.get("overrides") if isinstance(arm, dict) else None, Path(path).parent)
    try:
        spec = StudySpec.model_validate(section or {})
    except ValidationError as exc:
        raise ConfigError(f"{path}: study section: {validation_message(exc)}") from None
    return data, spec
