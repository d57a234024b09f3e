"""The teacher-free semi-supervised baseline (distill.self_teacher: mean_teacher) and output
distillation's adaptive trust in its probes (distill.output_trust: validation).

The baseline must say what the unlabelled images give without any teacher: it reads no teacher
entry, yet trains on the same unlabelled images with a consistency term. The adaptive trust must
silence a probe that is worse than the student on validation, and leave a better one teaching."""

import math
import warnings

import pytest
import torch

import featcache.distill.build as build
import featcache.distill.data as data_module
from featcache.distill.mean_teacher import MeanTeacher, consistency_rampup
from featcache.distill.memory import unlabelled_per_batch, warn_no_effect
from featcache.distill.trainer import Trainer
from featcache.distill.trust import trust
from featcache.errors import ConfigError, FeatcacheWarning
from featcache.manifest import DistillSpec, manifest_from_dict
from featcache.runs import Run
from tests.distill.conftest import make_manifest

TEACHER_FREE = {"enabled": False, "self_teacher": "mean_teacher", "unlabelled_batch": 2}
FEW = {"epochs": 2, "train_fraction": 0.5, "num_workers": 0}


def test_teacher_free_arm_never_reads_a_teacher_entry(cached_store, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the teacher-free arm opened the store or a teacher entry")

    monkeypatch.setattr(build, "FeatureStore", refuse)
    monkeypatch.setattr(build, "resolve_entry", refuse)
    monkeypatch.setattr(data_module, "resolve_entry", refuse)
    trainer = Trainer(make_manifest(cached_store, tmp_path / "run", distill=TEACHER_FREE, training=FEW))
    try:
        assert trainer.data.unlabelled_batch == 2 and trainer.data.unlabelled_items
        first = next(trainer._train_batches(0))
        assert not [k for k in first if k.startswith(("t:", "v:"))]  # no teacher feature in a batch
        assert not bool(first["has_mask"].all())  # the unlabelled images are there
        average = [p.clone() for p in trainer.model.mean_teacher.average.parameters()]
        trainer.train()
        moved = [p for p, q in zip(average, trainer.model.mean_teacher.average.parameters(), strict=True)
                 if not torch.equal(p, q)]
        assert moved  # the average followed the student
    finally:
        trainer.close()
    metrics = Run(tmp_path / "run").metrics_csv.read_text()
    assert ",out" in metrics.splitlines()[0] or "out," in metrics.splitlines()[0]


def test_teacher_free_consistency_weight_ramps_up_over_the_run():
    """From exp(-5) at the first step to 1 at the end of the ramp, rising; 0 means no ramp."""
    weights = [consistency_rampup(k / 10, 1.0) for k in range(11)]
    assert weights[0] == pytest.approx(math.exp(-5)) and weights[-1] == 1.0
    assert all(a < b for a, b in zip(weights, weights[1:], strict=False))
    assert consistency_rampup(0.5, 0.5) == 1.0 and consistency_rampup(0.0, 0.0) == 1.0


def test_teacher_free_unlabelled_images_count_and_raise_no_warning(cached_store, tmp_path):
    """The memory check counts the mean teacher's unlabelled rows, and no warning says they do
    nothing (a study's teacher-free arm printed one while they trained)."""
    manifest = make_manifest(cached_store, tmp_path / "run", distill=TEACHER_FREE, training=FEW)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatcacheWarning)
        warn_no_effect(manifest)
    assert unlabelled_per_batch(manifest) == 2
    alone = make_manifest(cached_store, tmp_path / "run", distill={"enabled": False, "unlabelled_batch": 2},
                          training=FEW)
    assert unlabelled_per_batch(alone) == 0
    with pytest.warns(FeatcacheWarning, match="needs teachers .* or distill.self_teacher"):
        warn_no_effect(alone)


def test_teacher_free_needs_distillation_off():
    with pytest.raises(ConfigError, match="self_teacher"):
        manifest_from_dict({"datasets": [{"name": "blobs"}], "distill": {"self_teacher": "mean_teacher"}},
                           "test")


def test_teacher_free_average_ramps_towards_the_student():
    student = torch.nn.Linear(2, 1)
    mean = MeanTeacher(student, decay=0.99)
    with torch.no_grad():
        student.weight.add_(1.0)
    before = mean.average.weight.clone()
    mean.update(student)  # first update: decay min(0.99, 1/10) = 0.1, so 90% of the way
    assert torch.allclose(mean.average.weight, before + 0.9, atol=1e-6)
    assert not mean.average.training and not mean.average.weight.requires_grad


def test_adaptive_trust_is_zero_for_a_probe_worse_than_the_student():
    scores = torch.tensor([0.30, 0.62, 0.70, math.nan])
    assert trust(scores, 0.60, 0.05).tolist() == pytest.approx([0.0, 0.4, 1.0, 0.0])
    assert trust(scores[:3], math.nan, 0.05).tolist() == [1.0, 1.0, 1.0]  # before any validation


def test_adaptive_output_weight_goes_to_zero_for_a_probe_worse_than_the_student():
    """A synthetic case: both probes score 0.3 on validation and the student 0.6: the output term
    is exactly zero and moves nothing. Probes at 0.9 against the same student teach as with fixed
    trust."""
    from tests.distill.test_model import _batch, _model

    def out_term(probe_score, trust_kind="validation"):
        model = _model(output=True, loss_gate="fixed", output_trust=trust_kind)
        if model.output_trust is not None:
            model.probe_val.fill_(probe_score)
            model.student_validated(0.6)
        out = model(*_batch())
        return out["terms"]["out"], out["terms"].get("out_trust")

    weak, weak_trust = out_term(0.3)
    assert float(weak) == 0.0 and float(weak_trust) == 0.0
    strong, strong_trust = out_term(0.9)
    fixed, _ = out_term(0.9, "fixed")
    assert float(strong_trust) == 1.0 and float(strong) > 0
    assert float(strong) == pytest.approx(float(fixed), rel=1e-6)


def test_adaptive_trust_never_returns_to_a_probe_the_student_has_passed():
    """A dip in the student's validation after it beat the probe does not hand it back."""
    from tests.distill.test_model import _model

    model = _model(output=True)
    model.probe_val.fill_(0.6)
    model.student_validated(0.58)
    assert model.output_trust.tolist() == pytest.approx([0.4, 0.4], abs=1e-5)
    model.student_validated(0.8)
    model.student_validated(0.3)  # one bad validation
    assert model.output_trust.tolist() == [0.0, 0.0]


def test_adaptive_trust_is_kept_in_the_checkpoint():
    from tests.distill.test_model import _model

    model = _model(output=True)
    model.probe_val.fill_(0.5)
    model.student_validated(0.48)
    state = model.state_dict()
    assert state["output_trust"].tolist() == pytest.approx([0.4, 0.4])
    assert "output_trust" not in _model(output=True, output_trust="fixed").state_dict()
    assert DistillSpec().output_trust == "validation"  # the default
