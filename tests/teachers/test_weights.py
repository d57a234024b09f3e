"""Checkpoint files: wrappers, prefixes, mismatches, safetensors and code-carrying pickles."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from featcache.errors import TeacherError
from featcache.teachers.registry import build_teacher
from featcache.teachers.weights import vit_block_indices
from tests.teachers.teacher_cases import TIMM_TINY


@pytest.fixture(scope="module")
def reference():
    return build_teacher("timm", random_init=True, **TIMM_TINY)


def _same_weights(teacher, reference):
    ours, theirs = teacher.model.state_dict(), reference.model.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("wrap", [
    lambda sd: {"model": sd, "epoch": 3},
    lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}},
    lambda sd: {"backbone." + k: v for k, v in sd.items()},
    lambda sd: {"teacher": {"module.backbone." + k: v for k, v in sd.items()}},
    lambda sd: {**sd, "head.weight": torch.zeros(10, 32), "head.bias": torch.zeros(10)},
], ids=["model", "state_dict+module", "backbone", "teacher+module+backbone", "with-head"])
def test_wrapped_and_prefixed_state_dicts_load(tmp_path, reference, wrap):
    path = tmp_path / "w.pth"
    torch.save(wrap(dict(reference.model.state_dict())), path)
    teacher = build_teacher("timm", checkpoint=path, **TIMM_TINY)
    assert _same_weights(teacher, reference)
    assert teacher.weights_source == str(path)


def test_safetensors_load(tmp_path, reference):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in reference.model.state_dict().items()}, str(path))
    assert _same_weights(build_teacher("timm", checkpoint=path, **TIMM_TINY), reference)


def test_mismatched_keys_are_listed(tmp_path, reference):
    state = dict(reference.model.state_dict())
    state.pop("blocks.0.attn.qkv.weight")
    state["blocks.0.extra.weight"] = torch.zeros(3)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(TeacherError) as err:
        build_teacher("timm", checkpoint=path, **TIMM_TINY)
    message = str(err.value)
    assert "1 missing (e.g. blocks.0.attn.qkv.weight)" in message
    assert "1 unexpected (e.g. blocks.0.extra.weight)" in message
    assert str(path) in message and "\n" not in message


def test_wrong_shape_is_named(tmp_path, reference):
    state = dict(reference.model.state_dict())
    state["cls_token"] = torch.zeros(1, 1, 7)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(TeacherError, match="cls_token"):
        build_teacher("timm", checkpoint=path, **TIMM_TINY)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_carrying_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    with path.open("wb") as handle:
        pickle.dump({"model": _Exploit(marker)}, handle)
    torch.save({"weights": torch.zeros(2), "payload": _Exploit(marker)}, tmp_path / "evil2.pth")
    for bad in (path, tmp_path / "evil2.pth"):
        for name, opts in (("timm", TIMM_TINY), ("litemedsam", {}), ("sam", {}),
                           ("clip", {"arch": "ViT-B-16"})):
            with pytest.raises(TeacherError, match="weights_only") as info:
                build_teacher(name, checkpoint=bad, **opts)
            message = str(info.value)
            # one complete sentence of ours, not torch's advice to re-run with weights_only=False
            assert "weights_only=False" not in message and "never runs code" in message, message
            assert "pickled" in message and message.endswith("as .safetensors"), message
    assert not marker.exists()


def test_weights_source_is_the_resolved_path(tmp_path, monkeypatch, reference):
    from featcache.teachers.weights import describe_source

    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "teacher.pth").write_bytes(b"x")
    monkeypatch.chdir(tmp_path / "alice")
    assert describe_source("teacher.pth") == str(tmp_path / "alice" / "teacher.pth")
    assert describe_source("random-init(seed=0)") == "random-init(seed=0)"
    monkeypatch.chdir(tmp_path)
    torch.save(reference.model.state_dict(), tmp_path / "t.pth")
    teacher = build_teacher("timm", checkpoint=Path("t.pth"), **TIMM_TINY)
    assert teacher.provenance()["weights_source"] == str(tmp_path / "t.pth")


def test_missing_or_garbage_files_are_teacher_errors(tmp_path):
    with pytest.raises(TeacherError, match="does not exist"):
        build_teacher("timm", checkpoint=tmp_path / "nope.pth", **TIMM_TINY)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"not a tensor file")
    with pytest.raises(TeacherError, match="safetensors"):
        build_teacher("timm", checkpoint=garbage, **TIMM_TINY)
    tensor_only = tmp_path / "t.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(TeacherError, match="not a state dict"):
        build_teacher("timm", checkpoint=tensor_only, **TIMM_TINY)


@pytest.mark.parametrize(("depth", "picks"), [(12, [2, 5, 8, 11]), (24, [5, 11, 17, 23]),
                                              (4, [0, 1, 2, 3]), (2, [0, 1]), (1, [0])])
def test_vit_block_indices(depth, picks):
    assert vit_block_indices(depth) == picks
