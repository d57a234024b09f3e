import pytest
import torch

import featcache.distill.model as model_module
from featcache.distill.model import DistillModel, _mkey, _to_grid
from featcache.distill.targets import Target
from featcache.manifest import DistillSpec, StudentConfig
from featcache.student import Student

TINY = StudentConfig(encoder="mobilenetv3_small_050", encoder_weights=None,
                     decoder_channels=[32, 16, 16, 8, 8])
TARGETS = [Target("a", "x", 8, (8, 8), "dec3"), Target("b", "x", 4, (8, 8), "dec3")]


def _batch(b=4):
    torch.manual_seed(0)
    image = torch.rand(b, 3, 32, 32)
    mask = (image[:, :1] > 0.5).float()
    teacher = {"a/x@dec3": torch.randn(b, 8, 8, 8), "b/x@dec3": torch.randn(b, 4, 8, 8)}
    valid = {k: torch.ones(b, 1, 8, 8) for k in teacher}
    return image, mask, torch.zeros(b, dtype=torch.long), teacher, valid


def _model(**spec):
    torch.manual_seed(0)
    return DistillModel(Student(TINY), TARGETS, DistillSpec(**spec), num_datasets=1)


def test_gradients_reach_the_teacher_gate():
    model = _model()
    out = model(*_batch())
    out["loss"].backward()
    gate_grads = [p.grad for p in model.gates.parameters()]
    assert gate_grads and all(g is not None for g in gate_grads)
    assert any(float(g.abs().sum()) > 0 for g in gate_grads)


def test_balance_regulariser_prevents_collapse():
    """Teacher a is always far more relevant: without the regulariser the gate collapses onto it,
    with it the other teacher keeps a real share."""

    def trained_min_weight(balance):
        model = _model(gate_balance_weight=balance, gate_temperature=0.05)
        gate = model.gates["dec3"]
        opt = torch.optim.Adam(gate.parameters(), lr=0.05)
        pooled, ds = torch.randn(16, 16), torch.zeros(16, dtype=torch.long)
        relevance = torch.tensor([[0.0, -1.0]]).repeat(16, 1)
        for _ in range(200):
            w = gate(pooled, ds, torch.zeros(16, 2))
            loss = model._gate_loss(w, relevance)
            opt.zero_grad()
            loss.backward()
            opt.step()
        gate.eval()
        with torch.no_grad():
            return float(gate(pooled, ds, torch.zeros(16, 2)).mean(0).min())

    assert trained_min_weight(0.0) < 0.01
    assert trained_min_weight(5.0) > 0.1


def test_uncertainty_weighting_cannot_zero_a_term_for_free():
    model = _model()
    s = model.log_vars
    terms = {"seg": torch.tensor(0.5), "feat": torch.tensor(0.2), "recon": torch.tensor(1.0)}
    # Pushing a small term's weight towards zero (s -> large) raises the objective.
    base = float(model._combine(terms).detach())
    with torch.no_grad():
        s[1] = 10.0
    assert float(model._combine(terms).detach()) > base
    # However far s goes, no weight leaves [1/max, max]: a term is never switched off.
    assert min(model.loss_weights().values()) >= 1 / model.spec.loss_gate_max_weight - 1e-6


def _trained_loss_weights(max_weight: float) -> dict[str, float]:
    """Train only the loss gate on fixed terms, one of them tiny (an easy reconstruction)."""
    model = _model(loss_gate_max_weight=max_weight)
    terms = {"seg": torch.tensor(0.4), "feat": torch.tensor(0.8), "recon": torch.tensor(0.001)}
    optimizer = torch.optim.Adam([model.log_vars], lr=0.1)
    for _ in range(800):
        optimizer.zero_grad()
        model._combine(terms).backward()
        optimizer.step()
    return model.loss_weights()


def test_bounded_loss_gate_caps_the_easiest_terms_weight():
    """Unbounded, each weight tends to 1/L: a tiny term would take a weight of ~1000. Bounded, it
    stops at the bound and the other terms keep weights near 1/L."""
    w = _trained_loss_weights(4.0)
    assert 3.9 < w["recon"] <= 4.0 + 1e-6
    assert abs(w["seg"] - 1 / 0.4) < 0.1 and abs(w["feat"] - 1 / 0.8) < 0.1
    unbounded = _trained_loss_weights(1e6)
    assert unbounded["recon"] > 20  # what the bound prevents (far from converged at 1000)


def test_ablation_switches_change_the_graph():
    full = _model()
    assert set(full.projectors) and set(full.inverse) and set(full.gates) and full.log_vars.requires_grad
    assert not _model(return_decoder=False).inverse
    uniform = _model(teacher_gate="uniform")
    assert not uniform.gates
    out = uniform(*_batch())
    assert torch.allclose(out["gates"]["dec3"], torch.full((4, 2), 0.5))
    fixed = _model(loss_gate="fixed")
    assert not fixed.log_vars.requires_grad
    baseline = _model(enabled=False)
    assert not baseline.projectors
    out = baseline(*_batch())
    assert set(out["terms"]) == {"seg"}


def test_finer_teacher_grid_is_projected_at_the_student_grid():
    """A teacher grid finer than the stage (LiteMedSAM 64x64 from a 32x32 stage) is reached by
    upsampling the projection: the projector convolutions run on the small grid."""
    torch.manual_seed(0)
    model = DistillModel(Student(TINY), [Target("c", "y", 4, (16, 16), "dec3")], DistillSpec(), 1)
    seen = []
    projector = model.projectors["c__y@dec3"]  # returns (projection, hidden)
    projector.register_forward_hook(lambda m, i, o: seen.append(tuple(o[0].shape[-2:])))
    image, mask, ds, _, _ = _batch()
    teacher, valid = {"c/y@dec3": torch.randn(4, 4, 16, 16)}, {"c/y@dec3": torch.ones(4, 1, 16, 16)}
    out = model(image, mask, ds, teacher, valid)
    out["loss"].backward()
    assert seen == [(8, 8)]  # dec3 of a 32 px input, not the teacher's 16x16
    assert torch.isfinite(out["terms"]["feat"]) and torch.isfinite(out["terms"]["recon"])
    assert model.projectors["c__y@dec3"].body[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("feature_grid", "compared_on"), [("coarser", (8, 8)), ("teacher", (16, 16))])
def test_feature_grid_sets_where_student_and_teacher_are_compared(monkeypatch, feature_grid, compared_on):
    """"coarser" averages a finer teacher map down to the stage; "teacher" upsamples the projection."""
    seen = []

    def recording_loss(pred, target, valid, kind):
        seen.append((tuple(pred.shape[-2:]), tuple(target.shape[-2:]), tuple(valid.shape[-2:])))
        return (pred - target).pow(2).mean((1, 2, 3))

    monkeypatch.setattr(model_module, "feature_loss", recording_loss)
    torch.manual_seed(0)
    model = DistillModel(Student(TINY), [Target("c", "y", 4, (16, 16), "dec3")],
                         DistillSpec(feature_grid=feature_grid), 1)
    image, mask, ds, _, _ = _batch()
    model(image, mask, ds, {"c/y@dec3": torch.randn(4, 4, 16, 16)}, {"c/y@dec3": torch.ones(4, 1, 16, 16)})
    assert seen == [(compared_on, compared_on, compared_on)]


def test_teacher_map_is_averaged_over_what_the_teacher_saw():
    """Padding (zeros, invalid) must not dim a border cell: its value is the mean of the valid
    part, and its weight is the fraction of it the teacher saw."""
    target = torch.full((1, 2, 4, 4), 3.0)
    valid = torch.ones(1, 1, 4, 4)
    target[..., :, 3] = 0.0  # the last column is padding
    valid[..., :, 3] = 0.0
    pooled, weight = _to_grid(target, valid, (2, 2))
    assert torch.allclose(pooled, torch.full((1, 2, 2, 2), 3.0))
    assert torch.allclose(weight[0, 0], torch.tensor([[1.0, 0.5], [1.0, 0.5]]))
    same, same_valid = _to_grid(target, valid, (4, 4))
    assert same is target and same_valid is valid


def test_projector_kinds():
    """Separable projectors keep a 3x3 (depthwise) view and cost a fraction of the paper's."""
    def projector_params(kind):
        m = _model(projector=kind)
        return sum(p.numel() for p in m.projectors.parameters()), m.projectors["a__x@dec3"]

    separable_n, separable = projector_params("separable")
    paper_n, paper = projector_params("conv3x3")
    depthwise = [c for c in separable.modules() if isinstance(c, torch.nn.Conv2d) and c.groups > 1]
    assert depthwise and depthwise[0].kernel_size == (3, 3)
    assert paper.body[0].kernel_size == (3, 3) and paper.body[0].groups == 1
    assert separable_n < paper_n


@pytest.mark.parametrize("to_student", [True, False])
def test_reconstruction_moves_the_student_only_when_asked(to_student):
    model = _model(recon_to_student=to_student, teacher_gate="uniform", loss_gate="fixed")
    image, mask, ds, teacher, valid = _batch()
    _, feats = model.student.forward_features(image)
    stage = feats["dec3"].detach().requires_grad_(True)
    _, recon = model._project(model.targets[0], stage)
    recon.mean().backward()
    touched = stage.grad is not None and stage.grad.abs().sum() > 0
    assert touched == to_student
    assert model.projectors[_mkey(model.targets[0].key)].body[0].weight.grad.abs().sum() > 0
