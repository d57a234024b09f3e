"""The CLI on bad input: one red line naming the problem, exit 1, nothing written."""

from typer.testing import CliRunner

from featcache.cli import app
from featcache.cli.app import as_flags

runner = CliRunner()


def _run(*args, env=None):
    return runner.invoke(app, list(args), env=env)


def test_help_lists_only_working_commands():
    result = _run("--help")
    assert result.exit_code == 0
    for cmd in ("extract", "distill", "eval", "teachers", "datasets"):
        assert cmd in result.output


def test_version():
    result = _run("--version")
    assert result.exit_code == 0 and "featcache" in result.output


def test_unknown_teacher_lists_known(tmp_path):
    result = _run("extract", "--teacher", "nope", "--dataset", "demo", "--store", str(tmp_path / "s"))
    assert result.exit_code == 1
    assert "unknown teacher 'nope'" in result.output and "litemedsam" in result.output
    assert "Traceback" not in result.output


def test_unknown_dataset_lists_known(tmp_path):
    result = _run("extract", "--teacher", "litemedsam", "--dataset", "nope",
                  "--store", str(tmp_path / "s"))
    assert result.exit_code == 1 and "unknown dataset 'nope'" in result.output and "busi" in result.output
    assert not (tmp_path / "s").exists()


def test_skip_bad_with_a_manifest_says_where_it_belongs(tmp_path):
    """Silently dropping the flag would extract without it; applying it would give an entry whose
    dataset fingerprint the manifest's distillation never matches."""
    result = _run("extract", "--manifest", "manifests/demo.yaml", "--skip-bad",
                  "--store", str(tmp_path / "s"))
    assert result.exit_code == 1 and "skip_bad: true" in result.output
    assert not (tmp_path / "s").exists()


def test_sam_without_checkpoint_says_how(tmp_path):
    root = tmp_path / "busi"
    result = _run("extract", "--teacher", "sam", "--dataset", "busi", "--root", str(root),
                  "--store", str(tmp_path / "s"))
    assert result.exit_code == 1 and "error:" in result.output


def test_teacher_errors_name_the_extract_flags(tmp_path):
    result = _run("extract", "--teacher", "timm", "--dataset", "demo", "--random-init",
                  "--store", str(tmp_path / "s"))
    assert result.exit_code == 1 and "timm teacher needs --arch NAME" in result.output
    result = _run("extract", "--teacher", "medsam", "--dataset", "demo", "--store", str(tmp_path / "s"))
    assert result.exit_code == 1
    assert "pass --checkpoint FILE" in result.output and "or --random-init for an" in result.output


def test_missing_manifest(tmp_path):
    result = _run("distill", "--manifest", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 1 and "missing.yaml does not exist" in result.output


def test_manifest_not_a_mapping(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("- just\n- a list\n")
    result = _run("distill", "--manifest", str(path))
    assert result.exit_code == 1 and "must be a YAML mapping" in result.output


def test_manifest_unknown_key_is_named(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("datasets: [{name: demo}]\ntraining: {epochz: 3}\n")
    result = _run("distill", "--manifest", str(path))
    assert result.exit_code == 1 and "training.epochz" in result.output


def test_store_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _run("extract", "--teacher", "litemedsam", "--dataset", "demo",
                  "--store", str(blocker / "store"))
    assert result.exit_code == 1 and "set --store to a folder you can write to" in result.output


def test_usage_error_exits_2():
    assert _run("extract", "--views").exit_code == 2


def test_eval_without_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    result = _run("eval", "--run", str(tmp_path / "run"))
    assert result.exit_code == 1 and "best.pt does not exist" in result.output
    assert "or pick --checkpoint best|last" in result.output  # the library's field, as its flag


def test_a_run_dir_holding_a_run_names_the_flags(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.csv").write_text("epoch\n")
    path = tmp_path / "m.yaml"
    path.write_text(f"datasets: [{{name: demo}}]\nrun_dir: {tmp_path / 'run'}\n")
    result = _run("distill", "--manifest", str(path))
    assert result.exit_code == 1
    assert "pass --resume to continue it, --overwrite to replace it, or set another run_dir" in result.output


def test_a_bad_override_names_the_flag(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("datasets: [{name: demo}]\n")
    result = _run("distill", "--manifest", str(path), "--set", "training.epochs")
    assert result.exit_code == 1 and "--set 'training.epochs': expected key.path=value" in result.output


def test_dask_settings_name_the_flags(tmp_path):
    result = _run("extract", "--teacher", "litemedsam", "--dataset", "demo", "--workers", "0",
                  "--store", str(tmp_path / "s"))
    assert result.exit_code == 1 and "--workers must be at least 1" in result.output


def test_fields_become_flags_as_whole_words_only():
    flags = {"threshold": "--threshold", "image_size": "--image-size", "device": "--device",
             "checkpoint": "--checkpoint"}
    assert as_flags("threshold 2.0 must lie strictly between 0 and 1", ("threshold",), flags) == \
        "--threshold 2.0 must lie strictly between 0 and 1"
    assert as_flags("image_size 33 must be a multiple of 32", ("image_size",), flags) == \
        "--image-size 33 must be a multiple of 32"
    assert as_flags("training.device 'x': not a device", ("training.device",), flags) == \
        "training.device 'x': not a device"  # a manifest key, not a flag of this command
    text = "run/checkpoints/best.pt and run/checkpoint/x.pt do not exist; pick checkpoint best|last"
    assert as_flags(text, ("checkpoint",), flags) == \
        "run/checkpoints/best.pt and run/checkpoint/x.pt do not exist; pick --checkpoint best|last"
    assert as_flags("device 'x': not a device", (), flags) == "device 'x': not a device"


def test_dataset_and_weights_errors_name_the_flags(tmp_path):
    """The library names its settings (root, checkpoint); the CLI prints them as this command's flags."""
    store = ("--store", str(tmp_path / "s"))
    result = _run("extract", "--teacher", "litemedsam", "--dataset", "kvasir-seg", *store)
    assert result.exit_code == 1 and "no dataset folder given; set --root to" in result.output
    result = _run("extract", "--teacher", "litemedsam", "--dataset", "demo", "--root", str(tmp_path), *store)
    assert result.exit_code == 1 and "the demo dataset is embedded; leave --root unset" in result.output
    missing = tmp_path / "sam.pth"
    result = _run("extract", "--teacher", "sam", "--dataset", "demo", "--checkpoint", str(missing), *store)
    assert result.exit_code == 1
    assert f"{missing} does not exist; set --checkpoint to a local weights file" in result.output
