"""What featcache trains is what it serves: for every dataset kind, `predict` on the raw files gives
exactly the predictions `eval` makes on the same items (the student run on `dataset.load(i)`, as
run_eval does): label maps equal, probabilities within 1e-5; written NIfTI volumes have their
source's affine and shape. Each run is a tiny random student saved with its datasets' recipes,
as the trainer saves them (tests/distill/test_trainer.py checks that it does)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from featcache.data.registry import build_dataset
from featcache.data.serving import read_classes
from featcache.data.volumes import slice_at
from featcache.evaluate.predict import predict_paths
from featcache.evaluate.predictor import Predictor
from featcache.manifest import StudentConfig
from featcache.runs import Checkpoint, Run
from featcache.student import Student
from tests.data import synth_layouts as synth

TINY = StudentConfig(encoder="test_efficientnet", encoder_weights=None, in_channels=1,
                     decoder_channels=[16, 8, 8, 8, 8])


def make_run(run: Path, datasets: list[tuple[str, Path | None, dict]], **config) -> Path:
    """A saved run of a seeded random student over `datasets` (name, root, options)."""
    torch.manual_seed(0)
    student = Student(TINY.model_copy(update=config)).eval()
    built = [build_dataset(name, root, **options) for name, root, options in datasets]
    manifest = {"datasets": [{"name": n, "root": str(r), "options": o} for n, r, o in datasets]}
    Run(run).save_checkpoint("best", Checkpoint(
        epoch=0, student_config=student.config.model_copy(update={"image_size": 64}),
        student=student.state_dict(), saved_manifest=manifest,
        recipes={d.name: d.recipe for d in built}))
    return run


def _eval_predictions(predictor: Predictor, data) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """sample id -> (its label map, its foreground probabilities), as eval computes them."""
    out = {}
    for i in range(len(data)):
        image = data.load(i).image
        out[data.samples[i].id] = (predictor.label_maps([image])[0], predictor.probabilities([image])[0])
    return out


def _check_images(predictor: Predictor, data, root: Path, out: Path) -> None:
    """Every sample's file, predicted from the raw file, against eval's prediction of the sample."""
    expected = _eval_predictions(predictor, data)
    for info in data.samples:
        source = root / info.meta["file"]
        written = np.asarray(Image.open(out / "masks" / f"{source.stem}.png"))
        classes = read_classes(out / "masks" / f"{source.stem}.png", data.recipe) \
            if predictor.mask_classes > 1 else (written > 0).astype(np.uint8)
        label_map, probs = expected[info.id]
        assert np.array_equal(classes, label_map), info.id
        np.testing.assert_allclose(predictor.predict(source), probs, atol=1e-5, rtol=0)


def _check_volumes(predictor: Predictor, data, out: Path) -> None:
    """Every kept slice of every case, against the same slice of the NIfTI predict wrote."""
    expected = _eval_predictions(predictor, data)
    for info in data.samples:
        vol = data.volumes[info.meta["volume"]]
        written = nib.load(str(out / "masks" / f"{_case(vol.image)}.nii.gz"))
        source = nib.load(str(vol.image))
        assert written.shape == source.shape[:3]
        np.testing.assert_array_equal(written.affine, source.affine)
        at = slice_at(info.meta["slice"], data.recipe.slicing.axis)
        classes = read_classes(out / "masks" / f"{_case(vol.image)}.nii.gz", data.recipe)[at]
        label_map, probs = expected[info.id]
        assert np.array_equal(classes, label_map), info.id
        np.testing.assert_allclose(predictor.predict(vol.image)[at], probs, atol=1e-5, rtol=0)


def _case(path: Path) -> str:
    stem = path.name.removesuffix(".nii.gz")
    return stem.removesuffix("_0000")


def test_folder_png_parity(tmp_path):
    """Greyscale student on RGB files: predict converts them as training did (PIL "L")."""
    root = synth.make_folder(tmp_path / "layout")
    run = make_run(tmp_path / "run", [("folder", root, {"channels": 1})])
    predictor = Predictor.from_run(run)
    predict_paths(predictor, root / "images", tmp_path / "out")
    _check_images(predictor, build_dataset("folder", root, channels=1), root, tmp_path / "out")


def test_busi_parity(tmp_path):
    root = synth.make_busi(tmp_path / "layout")
    run = make_run(tmp_path / "run", [("busi", root, {})], in_channels=3)
    predictor = Predictor.from_run(run)
    data = build_dataset("busi", root)
    for label in ("benign", "malignant", "normal"):
        inputs = tmp_path / "in" / label
        inputs.mkdir(parents=True)
        for image in (root / "Dataset_BUSI_with_GT" / label).glob("* ([0-9]).png"):
            (inputs / image.name).write_bytes(image.read_bytes())
        predict_paths(predictor, inputs, tmp_path / "out")
    _check_images(predictor, data, root / "Dataset_BUSI_with_GT", tmp_path / "out")


def test_msd_ct_window_axis_parity(tmp_path):
    """CT with an explicit HU window, sliced along axis 0: the recipe predict reads it with."""
    root = synth.make_msd(tmp_path / "layout", n=3)
    options = {"axis": 0, "window": [-100, 200], "empty_slices": "all"}
    run = make_run(tmp_path / "run", [("msd", root, options)])
    predictor = Predictor.from_run(run)
    assert predictor.recipes["msd"].slicing.axis == 0 and predictor.recipes["msd"].intensity.kind == "window"
    predict_paths(predictor, root / "imagesTr", tmp_path / "out")
    _check_volumes(predictor, build_dataset("msd", root, **options), tmp_path / "out")


def test_nnunet_multiclass_nifti_parity(tmp_path):
    """Two classes of an nnU-Net v2 dataset, MRI percentiles; outputs named by case, in the label
    values of the source."""
    root = synth.make_nnunet(tmp_path / "layout", n=2)
    data_dir = root / "Dataset501_Tiny"
    run = make_run(tmp_path / "run", [("nnunet", root, {"empty_slices": "all"})], mask_classes=2)
    predictor = Predictor.from_run(run)
    summary = predict_paths(predictor, data_dir / "imagesTr", tmp_path / "out", data_dir / "labelsTr")
    assert sorted(r.source.name for r in summary.results) == ["tiny_000_0000.nii.gz", "tiny_001_0000.nii.gz"]
    assert {r["id"] for r in summary.scores.per_image_rows()} == {"tiny_000", "tiny_001"}  # paired
    _check_volumes(predictor, build_dataset("nnunet", root, empty_slices="all"), tmp_path / "out")


def test_msd_multiclass_label_values_parity(tmp_path):
    """Label values that are not class numbers: classes [tumour, organ] are values 2 and 1, and
    predict writes the values back."""
    root = synth.make_msd(tmp_path / "layout", n=2)
    options = {"labels": ["tumour", "organ"], "empty_slices": "all"}
    run = make_run(tmp_path / "run", [("msd", root, options)], mask_classes=2)
    predictor = Predictor.from_run(run)
    predict_paths(predictor, root / "imagesTr", tmp_path / "out")
    data = build_dataset("msd", root, **options)
    _check_volumes(predictor, data, tmp_path / "out")
    written = np.asarray(nib.load(str(tmp_path / "out" / "masks" / "case_0.nii.gz")).dataobj)
    classes = read_classes(tmp_path / "out" / "masks" / "case_0.nii.gz", data.recipe)
    assert np.array_equal(written == 2, classes == 1) and np.array_equal(written == 1, classes == 2)


def test_classification_layout_parity(tmp_path):
    """Class probabilities from the raw files equal eval's within 1e-5."""
    import csv

    root = synth.make_classes(tmp_path / "layout")
    run = make_run(tmp_path / "run", [("classes", root, {})], in_channels=3, classifiers={"classes": 3})
    predictor = Predictor.from_run(run)
    data = build_dataset("classes", root)
    for info in data.samples:
        source = root / info.meta["file"]
        out = tmp_path / "out" / info.id
        predict_paths(predictor, source, out)
        rows = list(csv.DictReader((out / "class_probabilities.csv").open()))
        got = [float(rows[0][f"p_{c}"]) for c in data.classes]
        want = predictor.class_probabilities([data.load(data.index_of(info.id)).image], "classes")[0]
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def _predict_without_torch(args: list[str]) -> None:
    """`featcache predict ...` in a fresh process where importing torch fails."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises
            "from featcache.cli import main\n"
            f"sys.argv = ['featcache', 'predict', *{args!r}]\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stdout + done.stderr


def test_onnx_multitask_parity_without_torch(tmp_path):
    """A student with a 2-class mask decoder and a 3-class classifier, exported to ONNX and served
    by `featcache predict --model` with torch unimportable: its label maps equal eval's, its class
    probabilities are eval's within 1e-5."""
    import csv

    from featcache.evaluate.export import export_run

    seg_root, cls_root = synth.make_nnunet_png(tmp_path / "seg"), synth.make_classes(tmp_path / "cls")
    run = make_run(tmp_path / "run", [("nnunet", seg_root, {}), ("classes", cls_root, {})],
                   in_channels=3, mask_classes=2, classifiers={"classes": 3})
    result = export_run(run, "onnx", tmp_path / "student.onnx", runs=1)
    assert result.outputs == ["logits", "class_logits.classes"] and result.recipe.is_file()
    torch_student = Predictor.from_run(run)
    _predict_without_torch(["--model", str(result.path), "--input", str(seg_root / "imagesTr"),
                            "--out", str(tmp_path / "seg_out")])
    _check_images_from(torch_student, build_dataset("nnunet", seg_root), seg_root, tmp_path / "seg_out")
    data, inputs = build_dataset("classes", cls_root), tmp_path / "cls_in"
    inputs.mkdir()
    names = {info.id: f"{info.id}{Path(info.meta['file']).suffix}" for info in data.samples}
    for info in data.samples:  # one folder: names repeat across the class folders
        (inputs / names[info.id]).write_bytes((cls_root / info.meta["file"]).read_bytes())
    out = tmp_path / "cls"
    _predict_without_torch(["--model", str(result.path), "--input", str(inputs), "--out", str(out)])
    rows = {r["input"]: r for r in csv.DictReader((out / "class_probabilities.csv").open())}
    for info in data.samples:
        row = rows[names[info.id]]
        want = torch_student.class_probabilities([data.load(data.index_of(info.id)).image], "classes")[0]
        np.testing.assert_allclose([float(row[f"p_{c}"]) for c in data.classes], want, atol=1e-5, rtol=0)


def _check_images_from(predictor: Predictor, data, root: Path, out: Path) -> None:
    """nnU-Net 2D cases: the label maps another runtime wrote (named by case) equal eval's."""
    expected = _eval_predictions(predictor, data)
    for info in data.samples:
        written = read_classes(out / "masks" / f"{info.meta['case']}.png", data.recipe)
        assert np.array_equal(written, expected[info.id][0]), info.id
