"""The ablation library on a tiny configuration: demo slices, tiny random teachers, tiny student."""

from __future__ import annotations

import copy
import csv
import math

import pytest

from featcache.errors import ConfigError
from featcache.study import runner
from featcache.study.ablation import AblationSettings, kept_training_slices, plan, regime_slices, run_ablation
from featcache.study.tables import ablation_markdown, steps, write_csv
from tests.study.conftest import TINY_SAM, TINY_STUDENT, TINY_TIMM


def _settings(tmp_path, **kw) -> AblationSettings:
    student = {k: v for k, v in TINY_STUDENT.items() if k != "image_size"}
    return AblationSettings(out=tmp_path / "abl", store=str(tmp_path / "store"), seeds=[0, 1],
                            configs=[1, 2, 3], epochs=1, num_slices=24, image_size=32, batch_size=4,
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
    assert not by[(1, "full")].distill.enabled
    two = by[(2, "full")]
    assert [t.name for t in two.teachers] == ["litemedsam"] and two.distill.teacher_gate == "uniform"
    assert two.distill.loss_gate == "fixed" and not two.distill.return_decoder
    assert [t.name for t in by[(3, "full")].teachers] == ["litemedsam", "timm"]
    assert by[(4, "full")].distill.loss_gate == "uncertainty" and not by[(4, "full")].distill.return_decoder
    assert by[(5, "full")].distill.return_decoder and by[(5, "full")].distill.teacher_gate == "adaptive"
    assert [t.name for t in by[(6, "full")].teachers] == ["timm"]
    assert by[(5, "low")].training.train_fraction == 0.1 and by[(5, "full")].training.train_fraction == 1.0
    with pytest.raises(ConfigError, match="configuration"):
        plan(AblationSettings(configs=[7]), count=lambda d, k: 28)


def test_ablation_runs_writes_rows_and_resumes(tmp_path, monkeypatch):
    s = _settings(tmp_path)
    rows, notes = run_ablation(s)
    assert notes == []  # 24 demo slices: 15 training slices, 10% keeps 2
    assert [(r["config"], r["regime"], r["seed"]) for r in rows] == [
        (k, regime, seed) for regime in ("full", "low") for k in (1, 2, 3) for seed in (0, 1)]
    for r in rows:
        assert 0.0 <= r["dice_mean"] <= 1.0 and r["n_test"] >= 1 and r["params"] > 0
        assert r["train_slices"] == (15 if r["regime"] == "full" else 2)
    gates = [r for r in rows if r["config"] == 3]
    assert all(math.isclose(r["gate_real"] + r["gate_uninformative"], 1.0, abs_tol=1e-5) for r in gates)
    assert all(math.isnan(r["gate_real"]) for r in rows if r["config"] == 1)
    write_csv(tmp_path / "results.csv", rows)
    with (tmp_path / "results.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 12
    st = steps(rows)
    assert set(st) == {(regime, k) for regime in ("full", "low") for k in (2, 3)}
    assert all(s.exceeds is not None for s in st.values())  # two seeds: the rule is computed
    text = ablation_markdown(rows, {1: "a", 2: "b", 3: "c"}, notes, ["real", "uninformative"])
    assert text.count("| yes |") + text.count("| no |") == 4
    # Re-run: finished cells are read back, never retrained.
    monkeypatch.setattr(runner, "_train", lambda *a, **k: pytest.fail("a finished cell was retrained"))
    again, _ = run_ablation(s)
    assert [r["dice_mean"] for r in again] == [r["dice_mean"] for r in rows]


def test_changed_settings_do_not_reuse_runs(tmp_path):
    s = _settings(tmp_path, regimes=["full"])
    s.configs, s.seeds = [1], [0]
    run_ablation(s)
    s.epochs = 2
    with pytest.raises(ConfigError, match="different settings"):
        run_ablation(s)
