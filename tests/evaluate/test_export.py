"""`featcache export`: ONNX and TorchScript files that match PyTorch, and clean errors."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from featcache.cli import app
from featcache.cli.app import console
from featcache.errors import CheckpointError, ConfigError
from featcache.evaluate.export import TOLERANCE, check_parity, export_run, load_runtime
from featcache.runs import Run

runner = CliRunner()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch(tiny_run, tmp_path, fmt):
    result = export_run(tiny_run, fmt, tmp_path / f"s.{fmt}", runs=3)
    assert result.path.is_file() and result.file_bytes == result.path.stat().st_size > 10_000
    assert result.max_abs_diff <= result.tolerance and result.tolerance >= TOLERANCE
    assert result.torch_ms > 0 and result.runtime_ms > 0 and result.params == 110_869
    # Independently: a fresh batch of 3 through the saved file, same logits as the checkpoint.
    student, _ = Run(tiny_run).load_student()
    run, _ = load_runtime(result.path, fmt)
    x = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        np.testing.assert_allclose(run(x.numpy())[0], student(x).numpy(), atol=1e-4)
    assert result.outputs == ["logits"] and result.recipe == tmp_path / "s.recipe.json"


def test_parity_check_catches_a_different_model(tiny_run):
    student, _ = Run(tiny_run).load_student()
    diff, bound = check_parity(student, lambda x: [np.zeros((x.shape[0], 1, 64, 64), np.float32)], 64)
    assert diff > bound


def test_bad_size_and_format(tiny_run, tmp_path):
    with pytest.raises(ConfigError, match="multiple of 32"):
        export_run(tiny_run, "onnx", tmp_path / "a.onnx", image_size=50)
    with pytest.raises(ConfigError, match="onnx or torchscript"):
        export_run(tiny_run, "tflite", tmp_path / "a.tflite")
    with pytest.raises(CheckpointError, match="unknown checkpoint"):
        export_run(tiny_run, "onnx", which="newest")


def test_cli_export_prints_params_size_latency(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(console, "width", 200)
    out = tmp_path / "student.onnx"
    result = runner.invoke(app, ["export", "--run", str(tiny_run), "--format", "onnx", "--out", str(out),
                                 "--runs", "3", "--image-size", "96"])
    assert result.exit_code == 0, result.output
    assert "110,869" in result.output and "MB" in result.output and "onnxruntime" in result.output
    import onnxruntime as ort

    shape = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    assert shape[1:] == [1, 96, 96]


def test_cli_export_from_a_truncated_checkpoint(tiny_run, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    data = (tiny_run / "checkpoints" / "best.pt").read_bytes()
    (run / "checkpoints" / "best.pt").write_bytes(data[: len(data) // 2])
    result = runner.invoke(app, ["export", "--run", str(run), "--format", "torchscript"])
    assert result.exit_code == 1 and "truncated" in result.output and "Traceback" not in result.output
