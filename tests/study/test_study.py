"""`featcache study` on a tiny synthetic manifest: blob images, two tiny conv teachers, a tiny
student, 2 steps per run. End to end through the CLI, resumed without retraining."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from featcache.cli import app
from featcache.errors import ConfigError, FeatcacheError
from featcache.manifest import load_manifest
from featcache.study import runner
from featcache.study.ablation import StudyOptions, plan_study
from featcache.teachers.registry import TEACHERS, TeacherEntry
from tests.conftest import TinyTeacher
from tests.distill.conftest import TINY_STUDENT

ROOT = Path(__file__).parents[2]


@pytest.fixture
def tiny_teachers(monkeypatch, blob_registry):
    """`tiny` and `tiny2` as registered teachers, so the study extracts them like any other."""
    for seed, name in [(0, "tiny"), (1, "tiny2")]:
        def build(checkpoint=None, arch=None, seed=seed, name=name, **options):
            return TinyTeacher(seed, name)

        monkeypatch.setitem(TEACHERS, name, TeacherEntry(build, lambda: None))


def _manifest(tmp_path: Path, study: dict | None = None) -> Path:
    data = {
        "store": str(tmp_path / "store"), "run_dir": str(tmp_path / "single"),
        "datasets": [{"name": "blobs"}],
        "teachers": [{"name": "tiny", "levels": {"fine": "dec3"}},
                     {"name": "tiny2", "levels": {"fine": "dec3", "coarse": "enc3"}}],
        "student": dict(TINY_STUDENT),
        # No warm-up: the first epoch's step already moves the student, so arms differ.
        "training": {"steps": 4, "batch_size": 4, "lr": 1e-2, "warmup_epochs": 0, "device": "cpu",
                     "num_workers": 0},
    }
    if study is not None:
        data["study"] = study
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


STUDY = {"seeds": [0, 1], "label_fractions": [1.0, 0.5],
         "test_sets": [{"name": "shifted", "title": "other blobs test", "dataset": {"name": "blobs",
                                                                                   "options": {"seed": 1}}}]}


def _rows(path: Path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_study_runs_end_to_end_and_resumes_without_retraining(tmp_path, tiny_teachers, monkeypatch):
    manifest, out = _manifest(tmp_path, STUDY), tmp_path / "study"
    cli = CliRunner()
    first = cli.invoke(app, ["study", "--manifest", str(manifest), "--out", str(out)])
    assert first.exit_code == 0, first.output
    everything = _rows(out / "results.csv")
    rows = [r for r in everything if r["arm"] != "0"]
    # The default arms x 2 label fractions x 2 seeds, each scored on blobs' test split and the extra set.
    assert [(r["arm"], r["label_fraction"], r["seed"], r["test"]) for r in rows] == [
        (str(k), f, str(s), t) for s in (0, 1) for f in ("1.0", "0.5") for k in (1, 2, 3, 4)
        for t in ("blobs", "shifted")]
    assert {r["arm_name"] for r in rows} == {"student alone", "+ feature distillation",
                                             "+ output distillation", "full method"}
    dice = {(r["arm"], r["label_fraction"], r["seed"], r["test"]): r["dice_mean"] for r in rows}
    assert any(dice[("1", *rest)] != dice[("4", *rest)] for _, *rest in dice)  # the overrides took effect
    assert all(r["loss_w_out"] for r in rows if r["arm"] in ("3", "4"))  # output distillation is on
    assert all(0 <= float(r["dice_mean"]) <= 1 and int(r["steps"]) == 4 for r in rows)
    full = [r for r in rows if r["arm"] == "4"]
    assert all(math.isclose(float(r["gate_tiny"]) + float(r["gate_tiny2"]), 1, abs_tol=1e-5) for r in full)
    assert all(r["gate_tiny"] == "" for r in rows if r["arm"] == "1")  # no teacher to weigh
    table = (out / "table.md").read_text()
    assert "| 4 | full method | 50% labels, other blobs test |" in table
    assert table.count("[") >= 24  # every non-reference arm paired in 4 settings, twice
    assert (out / "study.png").stat().st_size > 10_000
    assert "study runs" in first.output and "reused" not in first.output
    assert "50% labels: 3 of 6 blobs training images" in table
    # The teacher as a row: arm 3's best probe on blobs' own test split, per (fraction, seed).
    teacher = [r for r in everything if r["arm"] == "0"]
    assert [(r["label_fraction"], r["seed"], r["test"]) for r in teacher] == [
        (f, s, "blobs") for f in ("1.0", "0.5") for s in ("0", "1")]
    assert all(0 <= float(r["dice_mean"]) <= 1 and r["probe"].startswith("tiny") for r in teacher)
    assert all(r["run_dir"].endswith(f"output-distillation-f{r['label_fraction']}-s{r['seed']}".replace(
        "f1.0", "f1")) for r in teacher)
    assert "| T | teacher: its best probe (tiny" in table and "T: the teacher itself" in table

    monkeypatch.setattr(runner, "_train", lambda *a, **k: pytest.fail("a finished run was retrained"))
    again = cli.invoke(app, ["study", "--manifest", str(manifest), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert again.output.count("reused (finished before)") == 16
    assert [r["dice_mean"] for r in _rows(out / "results.csv")] == [r["dice_mean"] for r in everything]

    changed = cli.invoke(app, ["study", "--manifest", str(manifest), "--out", str(out), "--arms", "1",
                               "--seeds", "0", "--set", "training.steps=3"])
    assert changed.exit_code == 1 and "different settings" in changed.output


def test_arms_are_overrides_applied_in_order(tmp_path, blob_registry):
    study = {"arms": [{"name": "alone", "overrides": {"distill.enabled": False}},
                      {"name": "fixed", "overrides": {"distill.loss_gate": "fixed", "training.lr": 0.01}},
                      {"name": "one teacher", "compared_to": "alone",
                       "overrides": {"teachers": [{"name": "tiny", "levels": {"fine": "dec3"}}]}}],
             "reference": "fixed", "seeds": [3], "label_fractions": [0.5],
             "quick": {"seeds": [7], "max_steps": 1, "arms": ["alone", "fixed"]}}
    plan = plan_study(_manifest(tmp_path, study))
    by = {c.arm: c.manifest for c in plan.cells}
    assert not by[1].distill.enabled and by[2].distill.loss_gate == "fixed" and by[2].training.lr == 0.01
    assert [t.name for t in by[3].teachers] == ["tiny"] and by[3].training.lr == 1e-2
    assert {(m.training.seed, m.training.train_fraction) for m in by.values()} == {(3, 0.5)}
    assert plan.reference == 2 and [plan.parent(k) for k in (1, 2, 3)] == [None, 1, 1]
    assert len({m.run_dir for m in by.values()}) == 3
    quick = plan_study(_manifest(tmp_path, study), StudyOptions(quick=True))
    assert [(c.arm, c.seed, c.manifest.training.steps) for c in quick.cells] == [(1, 7, 1), (2, 7, 1)]
    assert quick.out.name.endswith("-quick")
    # Without a study section: the default arms, seeds 0-4, full and 10% labels.
    default = plan_study(_manifest(tmp_path))
    assert len(default.cells) == 4 * 5 * 2 and default.reference == 1
    arms = {c.arm: c.manifest.distill for c in default.cells}
    assert arms[3].output and not arms[2].output and arms[4].output  # 3 is 2 + output distillation
    assert (arms[3].teacher_gate, arms[3].loss_gate, arms[3].return_decoder) == ("uniform", "fixed", False)


@pytest.mark.parametrize(("study", "options", "match"), [
    ({"arms": [{"name": "a", "overrides": {"distill.bogus": 1}}]}, None, r"arm 'a': key distill.bogus"),
    ({"arms": [{"name": "a"}, {"name": "A"}]}, None, "names must differ"),
    ({"reference": "nobody"}, None, "reference: no arm is named 'nobody'"),
    ({"test_sets": [{"name": "blobs", "dataset": {"name": "blobs"}}]}, None, "also a training dataset"),
    ({"seed": [1]}, None, "study section: key seed"),
    ({}, StudyOptions(arms=[2, 9]), r"arms \[9\]: choose from 1-4"),
    ({}, StudyOptions(arms=[2, 3]), "must include the reference arm 1"),
    ({}, StudyOptions(label_fractions=[0.0]), r"label_fractions: distinct values in \(0, 1\]"),
    ({}, StudyOptions(seeds=[1, 1]), "seeds: at least one, each once"),
    ({}, StudyOptions(overrides=["training.bogus=1"]), r"m.yaml: key training.bogus"),
])
def test_bad_studies_are_one_clear_error(tmp_path, blob_registry, study, options, match):
    with pytest.raises(ConfigError, match=match):
        plan_study(_manifest(tmp_path, study), options)


def test_a_test_set_without_masks_in_its_split_is_refused_before_training(tmp_path, blob_registry):
    study = {"test_sets": [{"name": "x", "dataset": {"name": "blobs"}, "split": "nosuch"}]}
    with pytest.raises(FeatcacheError, match="unknown split 'nosuch'"):
        plan_study(_manifest(tmp_path, study))
    assert not (tmp_path / "store").exists() and not list(tmp_path.glob("runs*"))


def test_cli_names_flags_and_distill_ignores_the_study_section(tmp_path, blob_registry):
    result = CliRunner().invoke(app, ["study", "--manifest", str(_manifest(tmp_path, {})),
                                      "--label-fractions", "1.0,1.0"])
    assert result.exit_code == 1 and "--label-fractions: distinct values" in result.output
    assert CliRunner().invoke(app, ["study", "--manifest", str(tmp_path / "m.yaml"),
                                    "--seeds", "a"]).exit_code == 2
    demo = load_manifest(ROOT / "manifests" / "study-demo.yaml")  # the same file trains one run
    assert [t.name for t in demo.teachers] == ["litemedsam", "timm"] and demo.training.steps == 40


def test_the_demo_study_is_the_ablation(capsys):
    plan = plan_study(ROOT / "manifests" / "study-demo.yaml", StudyOptions(seeds=[0], label_fractions=[0.1]))
    by = {c.arm: c.manifest for c in plan.cells}
    assert plan.reference == 2 and len(by) == 8
    assert not by[1].distill.enabled and by[1].student.encoder_weights is None
    assert [t.name for t in by[3].teachers] == ["litemedsam"] and by[3].distill.teacher_gate == "uniform"
    assert not by[4].distill.return_decoder and by[5].distill.return_decoder and not by[5].pretrain.steps
    assert by[6].pretrain.steps == 100
    assert by[6].pretrain.datasets[1].options["planes"] == ["coronal", "sagittal"]
    assert not by[7].distill.recon_to_student and plan.parent(7) == 5
    assert by[8].distill.output and by[8].distill.return_decoder and plan.parent(8) == 5
    assert {m.training.steps for m in by.values()} == {40}  # step parity across arms
    assert plan.notes == ["10% labels: 3 of 28 demo training images per run (drawn with the run's seed)"]
    assert [t.name for t in plan.test_sets] == ["orientation"]
    quick = plan_study(ROOT / "manifests" / "study-demo.yaml", StudyOptions(quick=True))
    assert list(quick.arms) == [2, 3, 5] and quick.seeds == [0, 1] and len(quick.cells) == 12
    assert {(c.manifest.training.steps, c.manifest.student.image_size) for c in quick.cells} == {(10, 64)}
    import importlib.util

    spec = importlib.util.spec_from_file_location("ablation_script", ROOT / "pipelines" / "ablation.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--arms", "9"]) == 1  # refused before anything runs
    assert "--arms [9]: choose from 1-8" in capsys.readouterr().err
