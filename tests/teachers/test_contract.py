"""One contract every registered teacher keeps, checked on tiny random configurations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featcache.teachers.registry import TEACHERS
from tests.teachers.teacher_cases import CASES

torch.set_num_threads(1)


def test_every_registered_teacher_has_a_contract_case():
    assert set(TEACHERS) <= {c.name for c in CASES.values()}


@pytest.fixture(scope="module", params=sorted(CASES))
def run(request):
    """(case, teacher, prepared batch, features of every level computed twice)."""
    case = CASES[request.param]
    teacher = case.build()
    rng = np.random.default_rng(0)
    images = [rng.random((40, 56, 1), dtype=np.float32), rng.random((48, 30, 3), dtype=np.float32)]
    x = torch.stack([teacher.prepare(im)[0] for im in images])
    names = list(teacher.available_levels)
    return case, teacher, x, teacher.extract(x, names), teacher.extract(x, names)


def test_declared_levels_match_actual_shapes(run):
    _, teacher, x, out, _ = run
    assert x.shape == (2, 3, teacher.preprocess.size, teacher.preprocess.size)
    assert set(teacher.default_levels) <= set(teacher.available_levels)
    for name, spec in teacher.available_levels.items():
        assert spec.name == name
        assert out[name].dtype == torch.float32
        assert tuple(out[name].shape) == (2, spec.channels, *spec.grid), name
        assert spec.stride * spec.grid[0] == teacher.preprocess.size, name
        assert torch.isfinite(out[name]).all()


def test_features_are_bitwise_deterministic(run):
    _, teacher, _, out, again = run
    for name in teacher.available_levels:
        assert torch.equal(out[name], again[name]), name


def test_a_subset_of_levels_gives_the_same_features(run):
    _, teacher, x, out, _ = run
    first = list(teacher.available_levels)[0]
    assert torch.equal(teacher.extract(x, [first])[first], out[first])


def test_model_is_frozen_and_in_eval_mode(run):
    _, teacher, _, _, _ = run
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_unknown_level_is_a_teacher_error(run):
    from featcache.errors import TeacherError

    _, teacher, _, _, _ = run
    with pytest.raises(TeacherError, match="no level"):
        teacher.select_levels(["nope"])


def test_checkpoint_round_trip_and_fingerprint(run, tmp_path):
    case, teacher, x, out, _ = run
    path = case.save(tmp_path / "w.pth")
    a, b = case.from_file(path), case.from_file(path)
    assert a.fingerprint() == b.fingerprint()
    assert a.weights_sha256 == b.weights_sha256
    last = teacher.default_levels[0]
    # The file holds these weights (batch 1 vs 2 may take other BLAS paths: close, not bitwise).
    torch.testing.assert_close(a.extract(x[:1], [last])[last], out[last][:1], rtol=1e-5, atol=1e-5)

    def bump(state):
        key = sorted(k for k, v in state.items() if v.is_floating_point())[0]
        state[key].view(-1)[0] += 1e-3

    changed = case.from_file(case.save(tmp_path / "w2.pth", edit=bump))
    assert changed.fingerprint() != a.fingerprint()
    assert changed.fingerprint(list(a.available_levels)) != a.fingerprint(list(a.available_levels))
