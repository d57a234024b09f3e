"""Will a training step fit? `student.image_size` and `training.batch_size` bounded by what the
machine can hold, checked before any loader worker starts (a worker allocating a 100000-px image
died with a traceback instead).

The estimate: one forward of the student, in eval mode (no BatchNorm statistics move), on one
image at a small probe size, summing the bytes of every module's output. Activations of a fully
convolutional student grow with the pixel count, so bytes per image at size S are that sum times
(S / probe)^2; training keeps them for backward and then holds their gradients, hence twice that,
plus the image and mask themselves. Against free memory: torch.cuda.mem_get_info on CUDA, the
available RAM (psutil) elsewhere. It leaves out weights, optimizer state and teacher targets, so
it is a lower bound: what it refuses cannot fit.
"""

from __future__ import annotations

import math
import warnings

import psutil
import torch

from featcache.distill.data import Source
from featcache.errors import ConfigError, FeatcacheWarning
from featcache.manifest import Manifest
from featcache.student import Student

GiB = 2**30


def check_fits(manifest: Manifest, student: Student, sources: list[Source], device: torch.device) -> None:
    """Raise one ConfigError naming student.image_size and training.batch_size, with what fits,
    when one step's activations cannot fit in the free memory of `device`; a FeatcacheWarning
    when batch_size is larger than the training set."""
    warn_no_effect(manifest)
    tr, size = manifest.training, manifest.student.image_size
    items = training_item_count(manifest, sources)
    extra = unlabelled_per_batch(manifest)  # drawn with replacement: every one of them counts
    labelled = min(tr.batch_size, items)  # what a step holds: a larger batch_size is one batch of all
    batch = labelled + extra
    if tr.batch_size > items:  # legitimate for a few labels (a study's 10% arm), so not an error
        warnings.warn(f"training.batch_size {tr.batch_size} is larger than the training set ({items} "
                      f"items: images x views of the train splits): every epoch is one batch of {items}",
                      FeatcacheWarning, stacklevel=2)
    stride = student.stride
    probe = 2 * stride
    per_px = 2 * activation_bytes(student, probe) / probe**2 + 4 * (manifest.student.in_channels + 1)
    free, where = free_bytes(device)
    need = per_px * size**2 * batch
    if need <= free:
        return
    largest = int(math.sqrt(free / (per_px * batch)) // stride * stride)
    fits = int(free // (per_px * size**2)) - extra
    names = f"training.batch_size {labelled}" + (f" and distill.unlabelled_batch {extra}" if extra else "")
    raise ConfigError(
        f"student.image_size {size} with {names} needs at least "
        f"{need / GiB:.1f} GiB of activations per step, and {where} has {free / GiB:.1f} GiB free: "
        + (f"at {batch} images per batch image_size up to {largest} fits" if largest >= stride
           else f"no image_size fits at {batch} images per batch")
        + (f"; at image_size {size} batch_size up to {fits} fits" if fits >= 1 else ""))


def unlabelled_per_batch(manifest: Manifest) -> int:
    """Unlabelled images each training batch gains (distill.unlabelled_batch), 0 where they are
    off: with nothing to teach them (no teacher and no self_teacher), or with train_fraction 1.0
    (no image is left out of the labelled set). build_data builds the batches by this rule."""
    d = manifest.distill
    taught = bool(d.enabled and manifest.teachers) or d.self_teacher != "none"
    return d.unlabelled_batch if taught and manifest.training.train_fraction < 1.0 else 0


def warn_no_effect(manifest: Manifest) -> None:
    """A FeatcacheWarning for each setting that is valid but does nothing in this manifest."""
    d = manifest.distill
    if d.unlabelled_batch and not unlabelled_per_batch(manifest):
        why = ("it needs teachers (distill.enabled and teachers) or distill.self_teacher"
               if manifest.training.train_fraction < 1.0
               else "training.train_fraction is 1.0, so no train image is left unlabelled")
        warnings.warn(f"distill.unlabelled_batch {d.unlabelled_batch} has no effect: {why}",
                      FeatcacheWarning, stacklevel=2)
    if d.output_probes != "all" and not d.output:
        warnings.warn(f"distill.output_probes {d.output_probes} has no effect: output distillation is "
                      "off (distill.output: false)", FeatcacheWarning, stacklevel=2)


def activation_bytes(student: Student, size: int) -> int:
    """Bytes of every module output (leaf modules) in one forward of one (C, size, size) image."""
    total = 0

    def count(module: torch.nn.Module, inputs: object, output: object) -> None:
        nonlocal total
        outs = output if isinstance(output, (tuple, list)) else [output]
        total += sum(o.numel() * o.element_size() for o in outs if isinstance(o, torch.Tensor))

    leaves = [m for m in student.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    was_training = student.training
    try:
        student.eval()  # BatchNorm running statistics must not move: the run starts as it would
        with torch.no_grad():
            student(torch.zeros(1, student.config.in_channels, size, size))
    finally:
        student.train(was_training)
        for hook in hooks:
            hook.remove()
    return total


def free_bytes(device: torch.device) -> tuple[int, str]:
    """(bytes free now, a name for where) on `device`."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0]), f"GPU {device}"
    return int(psutil.virtual_memory().available), "RAM"


def training_item_count(manifest: Manifest, sources: list[Source]) -> int:
    """Items one epoch draws from: training images (after train_fraction) times their views, as
    data.training_items lists them, counted without reading the store."""
    tr, total = manifest.training, 0
    for source in sources:
        images = len(source.dataset.split_indices(manifest.datasets[source.index].train_split))
        if tr.train_fraction < 1.0:
            images = max(1, round(tr.train_fraction * images))
        total += images * (source.views if tr.views == "all" else min(int(tr.views), source.views))
    return total
