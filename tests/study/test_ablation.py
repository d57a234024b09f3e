"""The ablation library on a tiny configuration: demo slices, tiny random teachers, tiny student."""

from __future__ import annotations

import copy
import csv
import math

import pytest

from featcache.distill.run import Run
from featcache.errors import ConfigError
from featcache.study import runner
from featcache.study.ablation import AblationSettings, kept_training_slices, plan, regime_slices, run_ablation
from featcache.study.tables import ablation_markdown, write_csv
from tests.study.conftest import TINY_SAM, TINY_STUDENT, TINY_TIMM


def _settings(tmp_path, **kw) -> AblationSettings:
    student = {k: v for k, v in TINY_STUDENT.items() if k != "image_size"}
    kw.setdefault("configs", [1, 2, 3, 6])
    return AblationSettings(out=tmp_path / "abl", store=str(tmp_path / "store"), seeds=[0, 1],
                            steps=2, pretrain_steps=2, num_slices=24, image_size=32, batch_size=4,
                            pool={"name": "demo", "options": {"num_slices": 12,
                                                              "planes": ["coronal", "sagittal"]}},
                            teachers={"real": copy.deepcopy(TINY_SAM),
                                      "uninformative": copy.deepcopy(TINY_TIMM)},
                            student=student, device="cpu", **kw)


def test_low_data_regime_keeps_two_training_slices():
    s = AblationSettings(num_slices=12, low_data_fraction=0.1)
    counts = {12: 6, 15: 9, 18: 12, 21: 15, 24: 15}
    n, note = regime_slices(s, "low", count=lambda dataset, k: counts[k])
    assert n == 21 and kept_training_slices(counts[n], 0.1) == 2
    assert "raised from 12 to 21" in note
    assert regime_slices(s, "full", count=lambda d, k: counts[k]) == (12, None)
    assert regime_slices(AblationSettings(num_slices=24), "low", count=lambda d, k: counts[k]) == (24, None)


def test_plan_builds_each_configuration():
    s = AblationSettings(configs=[1, 2, 3, 4, 5, 6], seeds=[0])
    cells, _ = plan(s, count=lambda dataset, k: 28)
    by = {(c.number, c.regime): c.manifest for c in cells}
    assert len(cells) == 12
    one, two = by[(1, "full")], by[(2, "full")]
    assert not one.distill.enabled and one.student.encoder_weights is None
    assert not two.distill.enabled and two.student.encoder_weights == "imagenet"
    three = by[(3, "full")]
    assert [t.name for t in three.teachers] == ["litemedsam"] and three.distill.teacher_gate == "uniform"
    assert three.distill.loss_gate == "fixed" and not three.distill.return_decoder
    assert len(three.teachers[0].taps()) == 3  # stage2 -> enc3, embedding -> enc4 and dec3
    four = by[(4, "full")]
    assert [t.name for t in four.teachers] == ["litemedsam", "timm"]
    assert four.distill.teacher_gate == "adaptive" and four.distill.loss_gate == "uncertainty"
    assert not four.distill.return_decoder and by[(5, "full")].distill.return_decoder
    assert not by[(5, "full")].pretrain.steps
    six = by[(6, "full")]
    assert six.pretrain.steps == s.pretrain_steps and len(six.pretrain.datasets) == 2
    assert six.pretrain.datasets[1].options["planes"] == ["coronal", "sagittal"]
    # Step parity: every arm trains the same number of optimizer steps with the same augmentation.
    assert {m.training.steps for m in by.values()} == {s.steps}
    assert {m.training.augment.enabled for m in by.values()} == {True}
    seven, _ = plan(AblationSettings(configs=[7], seeds=[0], regimes=["low"]), count=lambda d, k: 28)
    assert not seven[0].manifest.distill.recon_to_student and seven[0].manifest.distill.return_decoder
    assert by[(5, "low")].training.train_fraction == 0.1 and by[(5, "full")].training.train_fraction == 1.0
    with pytest.raises(ConfigError, match="configuration"):
        plan(AblationSettings(configs=[8]), count=lambda d, k: 28)


def test_ablation_runs_writes_rows_and_resumes(tmp_path, monkeypatch):
    s = _settings(tmp_path)
    rows, notes = run_ablation(s)
    assert notes == []  # 24 demo slices: 15 training slices, 10% keeps 2
    assert [(r["config"], r["regime"], r["seed"], r["test"]) for r in rows] == [
        (k, regime, seed, test) for seed in (0, 1) for regime in ("full", "low") for k in (1, 2, 3, 6)
        for test in ("axial", "orientation")]
    for r in rows:
        assert 0.0 <= r["dice_mean"] <= 1.0 and r["n_test"] >= 1 and r["params"] > 0
        assert r["train_slices"] == (15 if r["regime"] == "full" else 2)
    assert {r["n_test"] for r in rows if r["test"] == "orientation"} == {6}  # coronal + sagittal tests
    gates = [r for r in rows if r["config"] == 6]
    assert all(math.isclose(r["gate_real"] + r["gate_uninformative"], 1.0, abs_tol=1e-5) for r in gates)
    assert all(math.isnan(r["gate_real"]) for r in rows if r["config"] in (1, 3))  # nothing to weigh
    # One pretraining per seed: the low-label run reuses the full-label run's weights.
    runs = s.out / "runs"
    for seed in (0, 1):
        full, low = (Run(runs / f"c6-{regime}-s{seed}").pretrained_file for regime in ("full", "low"))
        assert full.read_bytes() == low.read_bytes()
    write_csv(tmp_path / "results.csv", rows)
    with (tmp_path / "results.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 32
    text = ablation_markdown(rows, {1: "a", 2: "b", 3: "c", 6: "d"}, notes, ["real", "uninformative"])
    assert "10% labels, coronal + sagittal test (orientation transfer)" in text
    assert text.count("[") >= 8  # paired intervals computed with two seeds
    # Re-run: finished cells are read back, never retrained.
    monkeypatch.setattr(runner, "_train", lambda *a, **k: pytest.fail("a finished cell was retrained"))
    again, _ = run_ablation(s)
    assert [r["dice_mean"] for r in again] == [r["dice_mean"] for r in rows]


def test_changed_settings_do_not_reuse_runs(tmp_path):
    s = _settings(tmp_path, regimes=["full"])
    s.configs, s.seeds = [1], [0]
    run_ablation(s)
    s.steps = 3
    with pytest.raises(ConfigError, match="different settings"):
        run_ablation(s)


def test_settings_errors_name_fields_and_the_script_names_flags(capsys, tmp_path):
    with pytest.raises(ConfigError, match=r"low_data_fraction must lie in \(0, 1\]") as caught:
        AblationSettings(low_data_fraction=2.0).validate()
    assert caught.value.fields == ("low_data_fraction",)
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "pipelines" / "ablation.py"
    spec = importlib.util.spec_from_file_location("ablation_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--steps", "0", "--out", str(tmp_path / "out")]) == 1  # refused first
    assert "--steps and --pretrain-steps must be at least 1" in capsys.readouterr().out
