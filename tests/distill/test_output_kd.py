"""Output distillation: task-adapted teacher probes fitted on the training masks only, reused while
their recipe holds and refitted when the labelled set changes, and a loss term that vanishes
when student and teachers agree."""

import csv
import math

import pytest
import torch

import featcache.distill.adapt as adapt
from featcache.distill.output_kd import mask_probabilities, mask_target, output_loss
from featcache.distill.trainer import Trainer, prepare, train
from featcache.events import ignore
from featcache.manifest import DistillSpec
from featcache.runs import Run
from tests.distill.conftest import make_manifest


def _fits(monkeypatch):
    """Record the batches every probe fit sees."""
    seen = []
    real = adapt.fit_probes

    def recording(probes, targets, batches, steps, **kw):
        seen.append(batches)
        return real(probes, targets, batches, steps, **kw)

    monkeypatch.setattr(adapt, "fit_probes", recording)
    return seen


def test_probes_see_the_training_masks_only(cached_store, tmp_path, monkeypatch):
    seen = _fits(monkeypatch)
    manifest = make_manifest(cached_store, tmp_path / "run", distill={"output": True, "probe_steps": 5},
                             training={"epochs": 1, "train_fraction": 0.5})
    trainer = Trainer(manifest)
    allowed = {i for _, i, _ in trainer.data.train_items}
    trainer.train()
    trainer.close()
    dataset = trainer.data.sources[0].dataset
    used = {int(i) for b in seen[0] for i in b["index"]}
    assert used == allowed  # the fraction kept of the train split, nothing else
    assert all(dataset.samples[i].split == "train" for i in used)
    assert len(allowed) < len(dataset.split_indices("train"))


def test_probes_are_reused_with_their_recipe_and_refitted_for_other_labels(cached_store, tmp_path,
                                                                           monkeypatch):
    seen = _fits(monkeypatch)
    output = {"output": True, "probe_steps": 5}
    manifest = make_manifest(cached_store, tmp_path / "run", distill=output, training={"epochs": 1})
    train(manifest)
    assert len(seen) == 1 and Run(tmp_path / "run").probes_file.is_file()
    train(manifest, overwrite=True)
    assert len(seen) == 1  # same labelled items, same entries: reused
    fewer = make_manifest(cached_store, tmp_path / "run", distill=output,
                          training={"epochs": 1, "train_fraction": 0.5})
    train(fewer, overwrite=True)
    assert len(seen) == 2  # another labelled set: fitted again


def test_output_distillation_trains_under_the_loss_gate(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run", distill={"output": True, "probe_steps": 5},
                             training={"epochs": 2})
    result = train(manifest)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert all(float(r["out"]) >= 0 for r in rows if r["split"] == "train")
    assert set(result.loss_weights) == {"seg", "feat", "recon", "out"}
    student, _ = Run(tmp_path / "run").load_student("best")  # the probes are not in the student
    assert not any("probe" in k for k in student.state_dict())


def test_teachers_meeting_a_stage_on_different_grids_are_mixed_on_the_coarsest(cached_store, tmp_path):
    teachers = [{"name": "tiny", "levels": {"fine": "dec4"}}, {"name": "tiny2", "levels": {"coarse": "dec4"}}]
    manifest = make_manifest(cached_store, tmp_path / "run", teachers=teachers, training={"epochs": 1},
                             distill={"output": True, "probe_steps": 2})
    grids = {t.loss_grid for t in Trainer(manifest).model.targets}
    assert grids == {(16, 16), (8, 8)}  # two grids at one stage
    assert float(train(manifest).loss_weights["out"]) > 0


def test_the_paper_preset_weighs_the_terms_as_the_paper(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run", training={"epochs": 1},
                             distill={"output": True, "probe_steps": 2, "loss_gate": "paper"})
    result = train(manifest)
    assert result.loss_weights == {"seg": 0.94, "feat": 0.01, "recon": 0.01, "out": 0.05}


def test_the_output_term_is_zero_when_student_and_teachers_agree():
    logits = torch.randn(3, 1, 8, 8)
    valid = torch.ones(3, 1, 8, 8)
    p = mask_probabilities(logits, 4.0)
    assert torch.equal(output_loss(p, p, valid), torch.zeros(3))
    assert float(output_loss(p, 1 - p, valid).min()) > 0
    classes = torch.softmax(torch.randn(3, 5), 1)
    assert torch.equal(output_loss(classes, classes, classes), torch.zeros(3))
    for kind in ("mse", "kl"):  # both losses, masks and classes
        assert torch.equal(output_loss(p, p, valid, kind), torch.zeros(3))
        assert float(output_loss(p, 1 - p, valid, kind).min()) > 0
        assert torch.equal(output_loss(classes, classes, classes, kind), torch.zeros(3))
    q = torch.tensor([[0.9, 0.1]])  # KL(t || s) by hand: 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1)
    assert float(output_loss(q, torch.tensor([[0.5, 0.5]]), q, "kl")) == pytest.approx(
        0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1))


def test_a_label_map_becomes_class_fractions_per_cell():
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, :2, :2] = 2
    fractions = mask_target(mask, 3, (2, 2))
    assert fractions[0, :, 0, 0].tolist() == [0.0, 0.0, 1.0] and fractions[0, :, 1, 1].tolist() == [1.0, 0, 0]
    assert torch.allclose(fractions.sum(1), torch.ones(1, 2, 2))


def test_the_temperature_decays_from_first_to_last():
    from featcache.distill.model import DistillModel
    from featcache.distill.targets import Target
    from featcache.student import Student
    from tests.distill.test_model import TINY

    model = DistillModel(Student(TINY), [Target("a", "x", 4, (8, 8), "dec3")], DistillSpec(output=True), 1)
    model.output_steps = 5
    assert model.temperature() == pytest.approx(4.0)
    model.output_step.fill_(4)
    assert model.temperature() == pytest.approx(1.0)
    model.output_step.fill_(2)
    assert model.temperature() == pytest.approx(2.5)


def test_unsure_teacher_cells_leave_the_output_term():
    """output_confidence: probes that say 0.5 everywhere are unsure of every cell, so the term is
    exactly zero; without the threshold the same probes give a positive term."""
    from tests.distill.test_model import TARGETS, _batch, _model

    def out_term(confidence):
        model = _model(output=True, output_confidence=confidence, loss_gate="fixed")
        for probe in model.output_probes.masks.values():  # sigmoid(0) = 0.5 everywhere
            torch.nn.init.zeros_(probe.weight)
            torch.nn.init.zeros_(probe.bias)
        return float(model(*_batch())["terms"]["out"])

    assert len(TARGETS) == 2
    assert out_term(0.0) > 0
    assert out_term(0.6) == 0.0


def test_only_the_chosen_probe_teaches_with_output_probes_best():
    """output_probes "best": a tap left out of output_taps cannot move the output term, whatever
    its probe says; with "all" the same change moves it."""
    from featcache.distill.targets import module_key
    from tests.distill.test_model import _batch, _model

    def out_term(which, scramble):
        model = _model(output=True, output_probes=which, loss_gate="fixed", output_temperature=[1.0, 1.0])
        if which == "best":
            model.output_taps.copy_(torch.tensor([True, False]))
        if scramble:  # probe b: a confident, arbitrary mask
            torch.nn.init.constant_(model.output_probes.masks[module_key("b/x@dec3")].bias, 9.0)
        return float(model(*_batch())["terms"]["out"])

    assert out_term("best", False) == out_term("best", True)
    assert out_term("all", False) != out_term("all", True)


def test_probe_scores_measure_the_mask_at_its_own_resolution():
    from featcache.distill.output_kd import ProbeSet, probe_scores
    from featcache.distill.targets import Target

    t = Target("a", "x", 1, (8, 8), "dec3")
    probes = ProbeSet([t], 1, 0)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, :16] = 1  # the top half, on the 8x8 grid: rows 0-3
    feature = torch.where(torch.nn.functional.adaptive_avg_pool2d(mask, (8, 8)) > 0.5, 1.0, -1.0)
    batch = {"label": torch.full((2,), -1), "mask": mask, "teacher": {t.key: feature},
             "valid": {t.key: torch.ones(2, 1, 8, 8)}}
    probe = probes.masks[next(iter(probes.masks))]
    for sign, expected in ((1.0, 1.0), (-1.0, 0.0)):  # the mask itself, then its complement
        torch.nn.init.constant_(probe.weight, sign)
        torch.nn.init.zeros_(probe.bias)
        assert probe_scores(probes, [t], [batch]) == {t.key: pytest.approx(expected)}


def test_the_best_validated_probe_is_chosen_and_listed(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run", training={"epochs": 1},
                             distill={"output": True, "probe_steps": 5, "output_probes": "best"})
    train(manifest)
    rows = list(csv.DictReader(Run(tmp_path / "run").probe_scores_csv.open()))
    trainer = Trainer(manifest)
    assert len(rows) == len(trainer.model.targets) >= 1
    best = max(rows, key=lambda r: float(r["val_score"]))
    assert [r["teaches"] for r in rows] == ["1" if r is best else "0" for r in rows]
    state = Run(tmp_path / "run").load_checkpoint("last").payload()
    trainer.close()
    taps = state["distill"]["output_taps"]
    assert int(taps.sum()) == 1  # the choice travels with the checkpoint (a resume keeps it)


def test_only_the_writing_rank_saves_probes_and_their_scores(cached_store, tmp_path):
    """Every torchrun rank fits the same probes; rank 0 alone saves them and appends RUN/probes.csv
    (before, each rank appended its rows)."""
    manifest = make_manifest(cached_store, tmp_path / "run", training={"epochs": 1},
                             distill={"output": True, "probe_steps": 3, "output_probes": "best"})
    trainer = Trainer(manifest)
    try:
        prepare(manifest, trainer.built, trainer.run, trainer.settings, ignore, writes=False)
        assert not trainer.run.probes_file.exists() and not trainer.run.probe_scores_csv.exists()
        assert int(trainer.model.output_taps.sum()) == 1  # the rank still chose its teaching probe
        prepare(manifest, trainer.built, trainer.run, trainer.settings, ignore, writes=True)
        rows = list(csv.DictReader(trainer.run.probe_scores_csv.open()))
        assert trainer.run.probes_file.is_file() and len(rows) == len(trainer.model.targets)
    finally:
        trainer.close()
