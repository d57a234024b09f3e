"""Issue 36, items 2, 5-7, 10, 11, 20, 21, 24 and the first resume point: run directories and
training under interrupts, numerical faults, full disks and hand-edited checkpoints."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from featcache.distill.trainer import Trainer, train
from featcache.events import EpochDone
from featcache.runs import Run
from tests.distill.conftest import TINY_STUDENT, make_manifest
from tests.hostile.conftest import PYTHON, child_env, cli


def _write(tmp_path, manifest, name="m.yaml"):
    path = tmp_path / name
    data = manifest if isinstance(manifest, dict) else manifest.model_dump(mode="json")
    path.write_text(yaml.safe_dump(data))
    return path


def _finite(state) -> bool:
    """Every weight, bias and BatchNorm statistic finite (a buffer such as output trust's probe
    score may be NaN by design)."""
    return all(bool(torch.isfinite(v).all()) for k, v in state.items()
               if k.rsplit(".", 1)[-1] in ("weight", "bias", "running_mean", "running_var"))


def _state(run_dir, which="last"):
    student, checkpoint = Run(run_dir).load_student(which)
    return student.state_dict(), checkpoint


# --- item 2: one training per run directory ---------------------------------------------------
def _folder_manifest(tmp_path):
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (tmp_path / "data" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(8):
        pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "data/images" / f"s{i}.png")
        mask = np.zeros((32, 32), np.uint8)
        mask[8:20, 6 + i:18 + i] = 255
        Image.fromarray(mask).save(tmp_path / "data/masks" / f"s{i}.png")
    return {"run_dir": str(tmp_path / "run"), "store": str(tmp_path / "store"),
            "datasets": [{"name": "folder", "root": str(tmp_path / "data")}],
            "student": dict(TINY_STUDENT), "distill": {"enabled": False},
            "training": {"steps": 4000, "batch_size": 2, "num_workers": 0, "seed": 0}}


def test_hostile_two_trainings_never_share_a_run_dir(tmp_path):
    path = _write(tmp_path, _folder_manifest(tmp_path))
    first = subprocess.Popen([PYTHON, "-m", "featcache", "distill", "--manifest", str(path)],
                             env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        lock, deadline = Run(tmp_path / "run").lock_file, time.monotonic() + 120
        while not (lock.exists() and (tmp_path / "run" / "manifest.yaml").exists()):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0]
            time.sleep(0.1)
        for extra in ([], ["--overwrite"], ["--resume"]):  # --overwrite must not delete its files
            res, errors = cli("distill", "--manifest", path, *extra)
            assert res.exit_code == 1 and "is being trained by another featcache process" in errors[0]
            assert f"pid {first.pid}" in errors[0], errors
        assert first.poll() is None
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 130, out
    assert not lock.exists()  # let go on the way out
    assert Run(tmp_path / "run").load_resume_point().training is not None


def test_hostile_a_lock_left_by_a_dead_process_is_taken_over(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run", training={"epochs": 1})
    dead = subprocess.Popen([PYTHON, "-c", "pass"])
    dead.wait()
    lock = Run(tmp_path / "run").lock_file
    lock.parent.mkdir(parents=True)
    lock.write_text(f'{{"host": "{os.uname().nodename}", "pid": {dead.pid}, "since": "then"}}')
    train(manifest)
    assert not lock.exists() and Run(tmp_path / "run").checkpoint_file("best").is_file()


# --- item 5 and the first resume point ---------------------------------------------------------
def test_hostile_a_signal_mid_step_resumes_into_the_same_run(cached_store, tmp_path):
    """SIGINT arriving inside a forward pass: the resumed run equals the uninterrupted one in
    every weight and every BatchNorm statistic, and in its validation curve."""
    settings = {"epochs": 3, "batch_size": 2, "num_workers": 0}
    full = make_manifest(cached_store, tmp_path / "full", training=settings)
    train(full)
    part = make_manifest(cached_store, tmp_path / "part", training=settings)
    trainer, calls = Trainer(part), []

    def signal_in_forward(module, inputs, output):
        if module.training:
            calls.append(1)
            if len(calls) == 4:  # inside the 4th training step's forward pass
                os.kill(os.getpid(), signal.SIGINT)

    norm = next(m for m in trainer.model.student.modules() if isinstance(m, torch.nn.BatchNorm2d))
    norm.register_forward_hook(signal_in_forward)  # the student's first BatchNorm: once per step
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    trainer.close()
    _, saved = _state(tmp_path / "part")
    steps = trainer.data.steps_per_epoch
    assert saved.epoch * steps + steps + saved.steps_into_next == 4  # stopped after that step
    resumed = Trainer(part)
    resumed.resume()
    resumed.train()
    resumed.close()
    for which in ("last", "best"):
        a, ca = _state(tmp_path / "full", which)
        b, cb = _state(tmp_path / "part", which)
        assert ca.epoch == cb.epoch and ca.best_val_dice == cb.best_val_dice
        for key, value in a.items():
            assert torch.equal(value, b[key]), (which, key)  # num_batches_tracked and running stats too
    curve = lambda run: [r for r in (tmp_path / run / "metrics.csv").read_text().splitlines()  # noqa: E731
                         if ",val," in r]
    assert [r.split(",")[-1] for r in curve("full")] == [r.split(",")[-1] for r in curve("part")]


def test_hostile_the_first_resume_point_is_written_after_the_first_epoch(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run", training={"epochs": 3, "batch_size": 4})
    seen = []

    def after_epoch(event):
        if isinstance(event, EpochDone):
            seen.append((event.epoch, Run(tmp_path / "run").checkpoint_file("last").is_file()))

    train(manifest, progress=after_epoch)
    assert seen[0] == (0, True), seen  # a kill -9 after it loses one epoch, not the run


# --- item 6: a study cell after kill -9 ------------------------------------------------------
@pytest.mark.parametrize("left", ["no resume point", "a resume point"])
def test_hostile_a_study_cell_killed_mid_run_resumes_or_retrains(cached_store, tmp_path, left):
    import json

    from featcache.study.runner import run_cell

    manifest = make_manifest(cached_store, tmp_path / "cell", training={"epochs": 2, "batch_size": 4})
    train(manifest)
    run = Run(tmp_path / "cell")
    if left == "no resume point":  # what kill -9 before the first last.pt leaves: metrics and best
        run.checkpoint_file("last").unlink()
    result = run_cell(manifest)
    assert not result.skipped and run.eval.summary_json.is_file()
    assert json.loads(run.study_train_file.read_text())["resumed"] == (left == "a resume point")


# --- item 7: NaN never passes as a result --------------------------------------------------------
def test_hostile_a_diverging_run_stops_naming_the_step(cached_store, tmp_path):
    path = _write(tmp_path, make_manifest(cached_store, tmp_path / "run", training={"epochs": 3}))
    res, errors = cli("distill", "--manifest", path, "--set", "training.lr=1e8",
                      "--set", "training.grad_clip=0", "--set", "training.warmup_epochs=0")
    assert res.exit_code == 1 and "diverged" in errors[0] and "at optimizer step" in errors[0], res.output
    assert "best val Dice" not in res.output
    best = Run(tmp_path / "run").checkpoint_file("best")
    if best.is_file():  # an epoch before the divergence: finite
        assert _finite(_state(tmp_path / "run", "best")[0])


@pytest.mark.parametrize("kind", ["probes", "pretrained"])
def test_hostile_a_nan_probes_or_pretrained_file_is_never_reused(cached_store, tmp_path, kind):
    from featcache.runs.checkpoint import load_payload, save_payload

    sections = ({"distill": {"output": True, "probe_steps": 3}} if kind == "probes" else
                {"pretrain": {"datasets": [{"name": "blobs", "train_split": "all"}], "steps": 2,
                              "batch_size": 4}})
    manifest = make_manifest(cached_store, tmp_path / "run", training={"epochs": 1}, **sections)
    train(manifest)
    run = Run(tmp_path / "run")
    saved = run.probes_file if kind == "probes" else run.pretrained_file
    payload = load_payload(saved)
    payload["model"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                        for k, v in payload["model"].items()}
    save_payload(saved, payload)  # the same recipe, NaN weights
    train(manifest, overwrite=True)
    assert _finite(load_payload(saved)["model"])
    assert _finite(_state(tmp_path / "run", "best")[0])


# --- items 10 and 11: what an interrupt says -------------------------------------------------------
def test_hostile_an_interrupt_while_fitting_probes_says_there_is_no_resume_point(
        cached_store, tmp_path, monkeypatch):
    import featcache.distill.adapt as adapt

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(adapt, "fit_probes", interrupted)
    path = _write(tmp_path, make_manifest(cached_store, tmp_path / "run", distill={"output": True}))
    res, _ = cli("distill", "--manifest", path)
    said = " ".join(res.output.split())
    assert res.exit_code == 130 and "there is no resume point" in said, said
    assert "--resume" not in said and not Run(tmp_path / "run").checkpoint_file("last").exists()


def test_hostile_the_resume_hint_keeps_every_set_and_works(cached_store, tmp_path, monkeypatch):
    from featcache.distill.guards import Interrupts

    path = _write(tmp_path, make_manifest(cached_store, tmp_path / "manifest-run"))
    sets = ["--set", f"run_dir={tmp_path / 'other run'}", "--set", "training.epochs=3"]
    calls = []
    original = Interrupts.check

    def stop_at_the_third_step(self):
        calls.append(1)
        if len(calls) == 3:
            self.requested = True
        original(self)

    monkeypatch.setattr(Interrupts, "check", stop_at_the_third_step)
    res, _ = cli("distill", "--manifest", path, *sets)
    said = " ".join(res.output.split())
    assert res.exit_code == 130 and "continue with featcache distill" in said, said
    hint = said.split("continue with ", 1)[1].split(" --resume")[0] + " --resume"
    assert "training.epochs=3" in hint and "other run" in hint, hint
    monkeypatch.setattr(Interrupts, "check", original)
    res, errors = cli(*shlex.split(hint)[1:])  # the command as printed, without "featcache"
    assert res.exit_code == 0, (res.output, errors)
    assert not (tmp_path / "manifest-run").exists()  # it resumed that run, not the manifest's own


# --- items 20, 21: disks and paths -------------------------------------------------------------
def test_hostile_a_full_disk_while_saving_a_checkpoint_is_one_line(cached_store, tmp_path):
    path = _write(tmp_path, make_manifest(cached_store, tmp_path / "run", training={"epochs": 1}))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt.tmp").symlink_to("/dev/full")  # writes: ENOSPC
    res, errors = cli("distill", "--manifest", path)
    assert res.exit_code == 1 and "last.pt: the disk is full" in errors[0], res.output


@pytest.mark.parametrize("where", ["is", "under"])
def test_hostile_a_run_dir_or_out_that_is_a_file_is_one_line(cached_store, tmp_path, where):
    from tests.evaluate.conftest import make_run

    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    target = blocker if where == "is" else blocker / "run"
    path = _write(tmp_path, make_manifest(cached_store, target))
    res, errors = cli("distill", "--manifest", path)
    assert res.exit_code == 1 and "notes.txt" in errors[0] and "a file" in errors[0], res.output
    run = make_run(tmp_path / "tiny")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "x.png")
    res, errors = cli("predict", "--run", run, "--input", tmp_path / "x.png", "--out", target)
    assert res.exit_code == 1 and "--out" in errors[0] and "a file" in errors[0], res.output
    assert blocker.read_text() == "mine"


# --- item 24: checkpoints are checked like manifests -------------------------------------------
def _edit(path, change):
    from featcache.runs.checkpoint import load_payload, save_payload

    payload = load_payload(path)
    change(payload)
    save_payload(path, payload)


def _first_weight(payload, key="student"):
    name = next(k for k, v in payload[key].items() if v.ndim == 4)
    payload[key][name] = torch.zeros(3, 3)


EDITS = {
    "wrong-shape tensor": (_first_weight, "size mismatch"),
    "string epoch": (lambda p: p.__setitem__("epoch", "three"), "epoch is 'three' (str)"),
    "list config": (lambda p: p.__setitem__("student_config", ["efficientnet"]), "student_config is"),
    "huge image_size": (lambda p: p.__setitem__("image_size", 10**6), "image_size 1000000 is outside"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_hostile_a_hand_edited_best_pt_is_one_line(tmp_path, edit):
    from tests.evaluate.conftest import make_run

    run = make_run(tmp_path / "run")
    change, said = EDITS[edit]
    _edit(Run(run).checkpoint_file("best"), change)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "x.png")
    res, errors = cli("predict", "--run", run, "--input", tmp_path / "x.png", "--out", tmp_path / "out")
    assert res.exit_code == 1 and said in errors[0] and "best.pt" in errors[0], res.output


@pytest.mark.parametrize("which", ["last", "pretrained", "probes"])
def test_hostile_hand_edited_training_files_are_one_line(cached_store, tmp_path, which):
    sections = {"distill": {"output": True, "probe_steps": 2},
                "pretrain": {"datasets": [{"name": "blobs", "train_split": "all"}], "steps": 1,
                             "batch_size": 4}}
    manifest = make_manifest(cached_store, tmp_path / "run", training={"epochs": 2}, **sections)
    path = _write(tmp_path, manifest)
    assert cli("distill", "--manifest", path)[0].exit_code == 0
    run = Run(tmp_path / "run")
    file = {"last": run.checkpoint_file("last"), "pretrained": run.pretrained_file,
            "probes": run.probes_file}[which]
    _edit(file, lambda p: _first_weight(p, "student" if which == "last" else "model")
          if which != "probes" else p["model"].__setitem__(next(iter(p["model"])), torch.zeros(2, 2)))
    args = ["--resume"] if which == "last" else ["--overwrite"]
    res, errors = cli("distill", "--manifest", path, *args)
    assert res.exit_code == 1 and file.name in errors[0], res.output
