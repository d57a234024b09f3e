"""Exporting the student for edge devices (ONNX or TorchScript), whole and with its recipe, with a
parity and latency check.

The exported graph takes images (B, C, S, S) at the one size S it was exported for (the batch is
dynamic) and returns every head: mask logits (B, M, S, S) named "logits", exactly as
`Student.forward` (M = 1 for a binary student, K + 1 softmax channels for K mask classes), then
each classification head's logits (B, n) named "class_logits.<dataset>". What a deployment needs
to feed it and read it (deploy.py's serving document: the input recipe of every dataset, the
resize, the outputs and their classes) goes into the ONNX file's metadata and, for either format,
into a JSON file beside it, so the file alone is enough to serve the student.
Parity: on random inputs every exported output must match PyTorch within
TOLERANCE · max(1, max |output|) (absolute difference).
ONNX uses torch's TorchScript-based exporter (dynamo=False): it needs only the `onnx` package, not
onnxscript, and handles the student's fixed-size interpolations.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from featcache.errors import CheckpointError, ConfigError
from featcache.evaluate.deploy import MASK_OUTPUT, class_output, serving_document, write_document
from featcache.evaluate.run_classes import run_classes
from featcache.runs import Run
from featcache.student import Student, count_params

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
TOLERANCE = 1e-4
OPSET = 17
Runtime = Callable[[np.ndarray], list[np.ndarray]]


@dataclass
class ExportResult:
    path: Path
    format: str
    image_size: int
    params: int
    file_bytes: int
    max_abs_diff: float
    tolerance: float  # the absolute bound the diff was checked against
    torch_ms: float  # median CPU latency per image, batch 1
    runtime_ms: float
    runtime: str  # "onnxruntime <version>" or "torchscript"
    threads: int
    outputs: list[str]  # the file's outputs: the mask logits, then one per classification head
    recipe: Path  # the serving document beside the file (JSON)


class AllHeads(nn.Module):
    """The student with every head: images (B, C, S, S) -> (mask logits, class logits of each
    classification head in sorted order)."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student
        self.heads = sorted(student.config.classifiers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, named = self.student.forward_features(x)
        return (logits, *(self.student.classify(named, h) for h in self.heads))


def output_names(student: Student) -> list[str]:
    return [MASK_OUTPUT, *(class_output(h) for h in sorted(student.config.classifiers))]


def export_student(student: Student, image_size: int, fmt: str, path: Path) -> Path:
    """Write `student` (eval mode, every head) as ONNX or TorchScript for (B, C, S, S) inputs."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use {' or '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model, names = AllHeads(student.eval()).eval(), output_names(student)
    x = torch.rand(1, student.config.in_channels, image_size, image_size)
    with warnings.catch_warnings():
        # Tracing warns that shape checks become constants: intended, the size is fixed at export.
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=names,
                              dynamic_axes={n: {0: "batch"} for n in ["image", *names]},
                              opset_version=OPSET, dynamo=False)
        else:
            with torch.no_grad():
                torch.jit.trace(model, x).save(str(path))
    return path


def _write_metadata(path: Path, document: dict) -> None:
    """The serving document into the ONNX file's metadata_props (key featcache.serving)."""
    import json

    import onnx

    from featcache.evaluate.deploy import METADATA_KEY

    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(document)
    onnx.save(model, str(path))


def load_runtime(path: Path, fmt: str) -> tuple[Runtime, str]:
    """A function float32 (B, C, S, S) -> every output of the exported file, and its name."""
    if fmt == "onnx":
        import onnxruntime as ort

        from featcache.evaluate.onnx_predictor import onnx_session

        session = onnx_session(path, torch.get_num_threads())
        return (lambda x: session.run(None, {"image": x})), f"onnxruntime {ort.__version__}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu")

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in module(torch.from_numpy(x))]

    return run, "torchscript"


def median_ms(fn: Callable[[], object], runs: int = 20, warmup: int = 3) -> float:
    """Median wall time of fn() in milliseconds after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def check_parity(student: Student, run: Runtime, image_size: int, batches: tuple[int, ...] = (1, 2),
                 seed: int = 0) -> tuple[float, float]:
    """(max abs difference over every output, the bound it must stay under) on seeded random inputs."""
    gen = torch.Generator().manual_seed(seed)
    model = AllHeads(student.eval())
    worst, scale = 0.0, 1.0
    for b in batches:
        x = torch.rand(b, student.config.in_channels, image_size, image_size, generator=gen)
        with torch.no_grad():
            refs = [t.numpy() for t in model(x)]
        for got, ref in zip(run(x.numpy()), refs, strict=True):
            worst = max(worst, float(np.abs(got - ref).max()))
            scale = max(scale, float(np.abs(ref).max()))
    return worst, TOLERANCE * scale


def _size(student: Student, image_size: int) -> int:
    stride = student.stride
    if image_size < stride or image_size % stride:
        raise ConfigError(f"image_size {image_size} must be a positive multiple of {stride} (the encoder's "
                          "stride)", fields=("image_size",))
    return image_size


def export_run(run_dir: Path, fmt: str, out: Path | None = None, image_size: int | None = None,
               which: str = "best", runs: int = 20) -> ExportResult:
    """Export a run's student with every head and its serving document, check parity
    (CheckpointError when it fails) and time both runtimes."""
    run_files = Run(run_dir)
    student, checkpoint = run_files.load_student(which)
    size = _size(student, int(image_size or checkpoint.image_size))
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use {' or '.join(FORMATS)}")
    path = Path(out) if out else run_files.export_file(which, size, SUFFIX[fmt])
    export_student(student, size, fmt, path)
    document = serving_document(student.config, size, checkpoint.recipes,
                                run_classes(student.config, checkpoint.manifest))
    if fmt == "onnx":
        _write_metadata(path, document)
    recipe = write_document(path, document)
    run, runtime = load_runtime(path, fmt)
    diff, bound = check_parity(student, run, size)
    if not diff <= bound:
        raise CheckpointError(f"{path}: exported {fmt} outputs differ from PyTorch by {diff:.3g} "
                              f"(allowed {bound:.3g}); do not deploy this file")
    x, model = torch.rand(1, student.config.in_channels, size, size), AllHeads(student)
    with torch.no_grad():
        torch_ms = median_ms(lambda: model(x), runs)
    xn = x.numpy()
    return ExportResult(path, fmt, size, count_params(student), path.stat().st_size, diff, bound,
                        torch_ms, median_ms(lambda: run(xn), runs), runtime, torch.get_num_threads(),
                        output_names(student), recipe)
