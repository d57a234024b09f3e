"""Task-adapted teachers for output distillation: fit each tap's probe on the cached features of
the run's labelled training items, or reuse the probes a run with the same recipe fitted.

Only `data.train_items` are read (the train split, after training.train_fraction): validation and
test masks never reach a probe (tests/distill/test_output_kd.py checks it). Items are read once,
without augmentation, and kept in memory for the fit: teacher features on the loss grids are small
beside the images (the demo's 28 slices: about 18 MB).
"""

from __future__ import annotations

from featcache.distill.build import Training, items_dataset
from featcache.distill.loaders import make_loader
from featcache.distill.loop import StepSettings, to_device
from featcache.distill.output_kd import fit_probes, probe_recipe
from featcache.distill.run import Pretrained, Run
from featcache.manifest import Manifest


def adapt_teachers(manifest: Manifest, built: Training, run: Run, settings: StepSettings) -> bool:
    """Load or fit built.model.output_probes; True when they were fitted now."""
    model, data = built.model, built.data
    probes = model.output_probes
    ids = [(data.sources[s].dataset.samples[i].id, v) for s, i, v in data.train_items]
    entries = {f"{s.dataset.name}/{t}": r.key for s in data.sources for t, r in s.entries.items()}
    recipe = probe_recipe(entries, ids, model.targets, {"steps": manifest.distill.probe_steps,
                                                        "normalisation": manifest.distill.normalisation,
                                                        "image_size": manifest.student.image_size})
    saved = run.load_probes()
    if saved is not None and saved.recipe == recipe:
        probes.load_state_dict(saved.model)
        return False
    items = items_dataset(manifest, data.sources, data.train_items, model.targets, True, augment=False)
    loader = make_loader(items, manifest.training.batch_size, 0, 1, settings.device)
    batches = [to_device(batch, settings.device) for batch in loader]
    probes.requires_grad_(True)
    fit_probes(probes, model.targets, batches, manifest.distill.probe_steps)
    run.save_probes(Pretrained(recipe, probes.state_dict(), manifest.distill.probe_steps))
    return True
