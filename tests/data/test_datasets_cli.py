"""`featcache datasets list` and `featcache datasets check` through typer's CliRunner."""

from typer.testing import CliRunner

from featcache.cli import app
from featcache.data.check import check_dataset
from tests.data.synth_layouts import make_busi, make_drive, make_msd, truncate

runner = CliRunner()


def test_list_shows_every_loader_with_modality():
    result = runner.invoke(app, ["datasets", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("busi", "kvasir-seg", "cvc-clinicdb", "drive", "msd", "folder", "nnunet", "aptos2019",
                 "isic2017", "classes"):
        assert name in result.output
    assert "ultrasound" in result.output and "dataset.json" in result.output


def test_check_clean_dataset(tmp_path):
    root = make_busi(tmp_path)
    result = runner.invoke(app, ["datasets", "check", "--dataset", "busi", "--root", str(root)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "ok: 10 sample(s) load cleanly" in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip().strip("│┃ ").startswith("all")]
    assert lines and "20x24" in lines[0] and "10" in lines[0]


def test_check_reports_every_problem_and_exits_1(tmp_path):
    root = make_busi(tmp_path)
    data = root / "Dataset_BUSI_with_GT"
    truncate(data / "benign" / "benign (1).png")
    (data / "malignant" / "malignant (2)_mask.png").unlink()
    args = ["datasets", "check", "-d", "busi", "-r", str(root)]
    result = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 1
    assert "2 problem(s)" in result.output
    assert "benign (1).png" in result.output and "malignant (2).png" in result.output
    assert "--skip-bad" in result.output
    skipped = runner.invoke(app, [*args, "--skip-bad"], env={"COLUMNS": "250"})
    assert skipped.exit_code == 0 and "8 sample(s) load cleanly, 2 file(s) left out" in skipped.output


def test_check_missing_root_is_one_red_line(tmp_path):
    result = runner.invoke(app, ["datasets", "check", "-d", "kvasir-seg", "-r", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_check_passes_loader_options_and_prints_notes(tmp_path):
    root = make_msd(tmp_path)
    result = runner.invoke(app, ["datasets", "check", "-d", "msd", "-r", str(root), "-o", "empty_slices=none",
                                 "-o", "window=[-100, 100]"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "ok: 15 sample(s)" in result.output
    drive = runner.invoke(app, ["datasets", "check", "-d", "drive", "-r",
                                str(make_drive(tmp_path / "d", test_labels=False))], env={"COLUMNS": "300"})
    assert drive.exit_code == 0 and "note:" in drive.output and "no labels" in drive.output
    bad = runner.invoke(app, ["datasets", "check", "-d", "msd", "-r", str(root), "-o", "axis"])
    assert bad.exit_code == 1 and "KEY=VALUE" in bad.output


def test_check_library_statistics(tmp_path):
    report = check_dataset("msd", make_msd(tmp_path), empty_slices="balanced")
    assert report.ok and report.modality == "CT"
    whole = report.splits["all"]
    assert whole.samples == 30 and whole.empty_masks == 15
    assert whole.min_hw == whole.max_hw == (16, 18)
    assert abs(whole.mean_foreground - (3 * 42 / (16 * 18)) / 6) < 1e-9
    assert sum(report.splits[s].samples for s in ("train", "val", "test")) == 30


def test_check_validates_drive_fov_masks_too(tmp_path):
    from tests.data.synth_layouts import save_mask

    root = make_drive(tmp_path)
    import numpy as np

    save_mask(np.zeros((8, 8), np.uint8), root / "training" / "mask" / "22_training_mask.gif")
    report = check_dataset("drive", root)
    assert [p["path"].split("/")[-1] for p in report.problems] == ["22_training_mask.gif"]
    assert "mask is 8x8" in report.problems[0]["reason"]


def test_check_a_classification_dataset_counts_samples_per_class(tmp_path):
    from tests.data.synth_layouts import make_aptos, make_classes, make_isic

    for name, root in (("aptos2019", make_aptos(tmp_path / "a")), ("isic2017", make_isic(tmp_path / "i")),
                       ("classes", make_classes(tmp_path / "c"))):
        result = runner.invoke(app, ["datasets", "check", "-d", name, "-r", str(root)],
                               env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
        assert "classification" in result.output and "load cleanly" in result.output
    report = check_dataset("isic2017", make_isic(tmp_path / "i2"))
    assert report.task == "classification" and report.splits["all"].labels == {0: 5, 1: 5, 2: 5}
    assert report.splits["val"].labels == {0: 1, 1: 1, 2: 1}
    header = [ln for ln in result.output.splitlines() if "cat" in ln and "zebra" in ln]
    assert header, result.output  # one column per class of the `classes` dataset
