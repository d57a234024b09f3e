"""Task-adapted teachers for output distillation: fit each tap's probe on the cached features of
the run's labelled training items, or reuse the probes a run with the same recipe fitted.

Only `data.train_items` are read for the fit (the train split, after training.train_fraction):
validation and test masks never reach a probe (tests/distill/test_output_kd.py checks it). The
fitted probes are then scored on the validation split, which already chooses the best checkpoint:
RUN/probes.csv lists the scores, and with distill.output_probes "best" the top probe alone
teaches. Items are read once, without augmentation, and kept in memory for the fit: teacher
features on the loss grids are small beside the images (the demo's 28 slices: about 18 MB).
"""

from __future__ import annotations

import torch

from featcache.distill.build import Training, items_dataset
from featcache.distill.guards import check_weights, finite_state, learned, load_state
from featcache.distill.loaders import make_loader
from featcache.distill.loop import StepSettings, to_device
from featcache.distill.model import DistillModel
from featcache.distill.output_kd import fit_probes, probe_recipe, probe_scores
from featcache.manifest import Manifest
from featcache.runs import Pretrained, Run


def adapt_teachers(manifest: Manifest, built: Training, run: Run, settings: StepSettings,
                   writes: bool = True) -> bool:
    """Load or fit built.model.output_probes; True when they were fitted now. `writes`: save the
    probes and RUN/probes.csv (rank 0 of a torchrun; every rank fits the same probes)."""
    model, data = built.model, built.data
    probes = model.output_probes
    ids = [(data.sources[s].dataset.samples[i].id, v) for s, i, v in data.train_items]
    entries = {f"{s.dataset.name}/{t}": r.key for s in data.sources for t, r in s.entries.items()}
    recipe = probe_recipe(entries, ids, model.targets, {"steps": manifest.distill.probe_steps,
                                                        "normalisation": manifest.distill.normalisation,
                                                        "image_size": manifest.student.image_size})
    saved = run.load_probes()
    # probes that are not finite are never reused, whatever their recipe says
    fitted = saved is None or saved.recipe != recipe or not finite_state(saved.model, learned(probes))
    if fitted:
        probes.requires_grad_(True)
        fit_probes(probes, model.targets, _batches(manifest, built, data.train_items, settings),
                   manifest.distill.probe_steps)
        check_weights(probes, manifest.distill.probe_steps, "fitting the output probes")
        if writes:
            run.save_probes(Pretrained(recipe, probes.state_dict(), manifest.distill.probe_steps))
    else:
        load_state(probes, saved.model, run.probes_file)
    with torch.random.fork_rng(devices=[]):  # an observation: the loader's seed draw must not move training
        scores = probe_scores(probes, model.targets, _batches(manifest, built, data.val_items, settings))
    teaching = _choose(model, scores)
    if model.output_trust is not None:  # trust.py compares these with the student's validations
        model.probe_val.copy_(torch.tensor([scores.get(t.key, float("nan")) for t in model.targets]))
    if writes:
        run.save_probe_scores([{"teacher": t.teacher, "level": t.level, "stage": t.stage,
                                "val_score": f"{scores.get(t.key, float('nan')):.4f}",
                                "teaches": int(t.key in teaching)} for t in model.targets])
    return fitted


def _batches(manifest: Manifest, built: Training, items: list, settings: StepSettings) -> list:
    """`items` read once, without augmentation, with their teacher features, on the device."""
    dataset = items_dataset(manifest, built.data.sources, items, built.model.targets, True, augment=False)
    loader = make_loader(dataset, manifest.training.batch_size, 0, 1, settings.device)
    return [to_device(batch, settings.device) for batch in loader]


def _choose(model: DistillModel, scores: dict[str, float]) -> set[str]:
    """The taps whose probes teach: all, or (output_probes "best") the top validation score's,
    written into the model's output_taps so that a checkpoint keeps the choice."""
    keys = [t.key for t in model.targets]
    if model.output_taps is None:
        return set(keys)
    best = max(keys, key=lambda k: scores.get(k, float("-inf")))
    model.output_taps.copy_(torch.tensor([k == best for k in keys]))
    return {best}
