"""`featcache predict` on a tiny run: outputs, sizes, NIfTI affine, and bad inputs."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from featcache.cli import app
from featcache.cli.app import console
from featcache.data.readers import read_scan
from featcache.data.serving import SlicedVolume
from featcache.errors import DatasetError
from featcache.evaluate.predict import predict_paths
from featcache.evaluate.predictor import Predictor
from tests.evaluate.conftest import blob_image

runner = CliRunner()


def _inputs(folder: Path) -> Path:
    folder.mkdir()
    Image.fromarray(blob_image(50, 70)).save(folder / "grey.png")
    rgb = np.stack([blob_image(33, 41, s) for s in range(3)], axis=2)
    Image.fromarray(rgb).save(folder / "colour.jpg")
    return folder


def _volume(path: Path) -> np.ndarray:
    rng = np.random.default_rng(1)
    affine = np.diag([2.0, 1.5, 3.0, 1.0])
    affine[:3, 3] = [-10, 5, 7]
    data = rng.uniform(0, 500, (20, 24, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return affine


def _volume_with_truth(tmp_path: Path, gt: np.ndarray) -> tuple[Path, Path]:
    """in/ct.nii.gz (a random volume) and gt/ct.nii.gz (`gt`, same affine): (input dir, mask dir)."""
    src, masks = tmp_path / "in", tmp_path / "gt"
    src.mkdir()
    masks.mkdir()
    affine = _volume(src / "ct.nii.gz")
    nib.save(nib.Nifti1Image(gt, affine), str(masks / "ct.nii.gz"))
    return src, masks


def test_images_give_masks_and_overlays_at_input_size(tiny_run, tmp_path):
    src = _inputs(tmp_path / "in")
    masks = tmp_path / "gt"
    masks.mkdir()
    Image.fromarray((blob_image(50, 70) > 150).astype(np.uint8) * 255).save(masks / "grey.png")
    summary = predict_paths(Predictor.from_run(tiny_run), src, tmp_path / "out", masks)
    assert not summary.failures and len(summary.results) == 2
    for stem, size in (("grey", (70, 50)), ("colour", (41, 33))):  # PIL sizes are (W, H)
        mask = Image.open(tmp_path / "out" / "masks" / f"{stem}.png")
        assert mask.size == size and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        with Image.open(tmp_path / "out" / "overlays" / f"{stem}.png") as over:  # enlarged, legend below
            assert over.size[0] % size[0] == 0 and over.size[1] > over.size[0] // size[0] * size[1]
    by_name = {r.source.name: r for r in summary.results}
    assert by_name["grey.png"].dice is not None and by_name["colour.jpg"].dice is None


def test_threshold_changes_the_mask(tiny_run):
    image = blob_image(40, 40)[:, :, None] / 255.0
    low = Predictor.from_run(tiny_run, threshold=0.01).masks([image])[0]
    high = Predictor.from_run(tiny_run, threshold=0.99).masks([image])[0]
    prob = Predictor.from_run(tiny_run).probabilities([image])[0]
    assert low.sum() >= high.sum()
    assert np.array_equal(low, prob >= 0.01)


def test_nifti_volume_keeps_shape_and_affine(tiny_run, tmp_path):
    src = tmp_path / "ct.nii.gz"
    affine = _volume(src)
    summary = predict_paths(Predictor.from_run(tiny_run), src, tmp_path / "out")
    out = nib.load(str(tmp_path / "out" / "masks" / "ct.nii.gz"))
    assert out.shape == (20, 24, 5)
    np.testing.assert_allclose(out.affine, affine)
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1}
    assert summary.results[0].outputs[1].parent.name == "overlays"


def test_volume_slices_match_the_image_path(tiny_run, tmp_path):
    """Slice k of the volume output equals predicting that slice alone, read through the recipe."""
    src = tmp_path / "v.nii"
    _volume(src)
    predictor = Predictor.from_run(tiny_run)
    predict_paths(predictor, src, tmp_path / "out")
    vol = np.asarray(nib.load(str(tmp_path / "out" / "masks" / "v.nii.gz")).dataobj)
    recipe = predictor.recipes["volumes (before recipes)"]
    volume = SlicedVolume(read_scan(src, recipe), recipe)
    alone = predictor.masks([volume.plane(2)])[0]
    assert np.array_equal(volume.orient(vol)[:, :, 2].astype(bool), alone)


def test_corrupt_input_stops_without_keep_going(tiny_run, tmp_path):
    src = _inputs(tmp_path / "in")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DatasetError, match="broken.png.*corrupt"):
        predict_paths(Predictor.from_run(tiny_run), src, tmp_path / "out")


def test_cli_keep_going_writes_the_others_and_lists_failures(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(console, "width", 250)  # no folding of long tmp paths in the table
    src = _inputs(tmp_path / "in")
    (src / "broken.png").write_bytes(b"garbage")
    Image.fromarray(np.zeros((8, 8, 2), np.uint8), mode="LA").save(src / "twochan.png")
    out = tmp_path / "out"
    args = ["predict", "--run", str(tiny_run), "--input", str(src), "--out", str(out)]
    stop = runner.invoke(app, args)
    assert stop.exit_code == 1 and "broken.png" in stop.output
    result = runner.invoke(app, [*args, "--keep-going"])
    assert result.exit_code == 1
    assert "2 of 4 inputs failed" in result.output
    assert "twochan.png" in result.output and "2 channels" in result.output
    assert (out / "masks" / "grey.png").is_file() and (out / "masks" / "colour.png").is_file()


def test_cli_without_checkpoint_is_one_clean_error(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "img.png").write_bytes(b"")
    result = runner.invoke(app, ["predict", "--run", str(tmp_path / "run"), "--input",
                                 str(tmp_path / "img.png"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "best.pt does not exist" in result.output and "Traceback" not in result.output


def test_bad_threshold_is_rejected(tiny_run):
    result = runner.invoke(app, ["predict", "--run", str(tiny_run), "--input", ".", "--out", "x",
                                 "--threshold", "1.5"])
    assert result.exit_code == 1 and "--threshold 1.5 must lie strictly between 0 and 1" in result.output


def test_volume_with_a_ground_truth_volume_is_scored(tiny_run, tmp_path):
    gt = np.zeros((20, 24, 5), np.uint8)
    gt[5:15, 6:18] = 1
    src, masks = _volume_with_truth(tmp_path, gt)
    result = predict_paths(Predictor.from_run(tiny_run), src, tmp_path / "out", masks).results[0]
    assert 0.0 <= result.dice <= 1.0
    with Image.open(result.outputs[1]) as im:  # the slice in display orientation: rot90 swaps the axes
        assert im.size[0] % 20 == 0 and im.size[1] > im.size[0] // 20 * 24
    nib.save(nib.Nifti1Image(gt[:, :, :3], np.eye(4)), str(masks / "ct.nii.gz"))
    with pytest.raises(DatasetError, match="does not match"):
        predict_paths(Predictor.from_run(tiny_run), src, tmp_path / "out", masks)


def test_cli_masks_print_the_eval_summary_and_write_its_files(tiny_run, tmp_path, monkeypatch):
    """predict --masks scores like eval: the same table, per_image.csv and summary.json in --out."""
    import csv
    import json

    from featcache.evaluate.outputs import PER_IMAGE_COLUMNS

    monkeypatch.setattr(console, "width", 250)
    src = _inputs(tmp_path / "in")
    masks = tmp_path / "gt"
    masks.mkdir()
    Image.fromarray((blob_image(50, 70) > 150).astype(np.uint8) * 255).save(masks / "grey.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", "--run", str(tiny_run), "--input", str(src), "--out", str(out),
                                 "--masks", str(masks)])
    assert result.exit_code == 0, result.output
    assert "pooled Dice" in result.output and "±" in result.output and "Empty masks" in result.output
    with (out / "per_image.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ["grey"] and tuple(rows[0]) == PER_IMAGE_COLUMNS
    assert rows[0]["hd95_unit"] == "px"  # a PNG has no spacing
    summary = json.loads((out / "summary.json").read_text())
    group = summary["groups"][0]
    assert summary["format"] == "featcache-eval/1" and group["n"] == 1 and group["dataset"] == "in"
    assert group["dice_mean"] == pytest.approx(float(rows[0]["dice"]))
    assert summary["info"]["masks"] == str(masks)


def test_volume_scores_are_3d_in_millimetres(tiny_run, tmp_path):
    from featcache.evaluate.metrics import all_metrics
    from featcache.evaluate.predict import write_scores

    gt = np.zeros((20, 24, 5), np.uint8)
    gt[5:15, 6:18, 1:4] = 1
    src, masks = _volume_with_truth(tmp_path, gt)
    summary = predict_paths(Predictor.from_run(tiny_run), src, tmp_path / "out", masks)
    pred = np.asarray(nib.load(str(tmp_path / "out" / "masks" / "ct.nii.gz")).dataobj) > 0
    expected = all_metrics(pred, gt > 0, spacing=(2.0, 1.5, 3.0))
    row = summary.scores.per_image_rows()[0]
    assert row["hd95_unit"] == "mm" and row["hd95"] == pytest.approx(expected["hd95"])
    assert summary.results[0].dice == pytest.approx(expected["dice"])
    assert write_scores(summary, tmp_path / "out")[1].is_file()
