"""aptos2019, isic2017 and classes on miniature synthetic copies of their layouts."""

import re
from collections import Counter

import numpy as np
import pytest

from featcache.data.check import check_dataset
from featcache.data.registry import build_dataset
from featcache.errors import DatasetError
from tests.data.synth_layouts import H, W, make_aptos, make_classes, make_isic, save_rgb, truncate


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def _per_split(ds) -> dict[str, Counter]:
    return {sp: Counter(ds.samples[i].meta["label"] for i in ds.split_indices(sp))
            for sp in ("train", "val", "test")}


def test_aptos_labels_classes_and_samples(tmp_path):
    ds = build_dataset("aptos2019", make_aptos(tmp_path))
    assert len(ds) == 15 and ds.task == "classification" and ds.graded
    assert ds.classes == ("no DR", "mild", "moderate", "severe", "proliferative DR")
    i = ds.index_of("0007ab07")
    assert ds.samples[i].meta["label"] == 2 and ds.samples[i].meta["class"] == "moderate"
    sample = ds.load(i)
    assert sample.label == 2 and sample.image.shape == (H, W, 3)
    assert sample.mask.shape == (H, W) and sample.mask.dtype == np.uint8 and not sample.mask.any()
    assert ds.describe()["task"] == "classification" and ds.describe()["classes"][4] == "proliferative DR"


def test_aptos_split_is_stratified_seeded_and_deterministic(tmp_path):
    root = make_aptos(tmp_path)
    ds = build_dataset("aptos2019", root, fractions=(0.34, 0.33, 0.33))
    # 3 images per grade: one of each grade in every split, whatever the seed.
    assert all(counts == Counter(range(5)) for counts in _per_split(ds).values())
    again = build_dataset("aptos2019", root, fractions=(0.34, 0.33, 0.33))
    assert [s.split for s in again.samples] == [s.split for s in ds.samples]
    other = build_dataset("aptos2019", root, fractions=(0.34, 0.33, 0.33), seed=3)
    assert [s.split for s in other.samples] != [s.split for s in ds.samples]


def test_aptos_fingerprint_follows_the_grades(tmp_path):
    root = make_aptos(tmp_path)
    fp = build_dataset("aptos2019", root).fingerprint()
    csv = root / "aptos2019-blindness-detection" / "train.csv"
    csv.write_text(csv.read_text().replace("0003ab03,3", "0003ab03,4"))
    assert build_dataset("aptos2019", root).fingerprint() != fp  # same images, a regraded one


@pytest.mark.parametrize("row, expected", [
    ("0001ab01,7", r"train.csv:3: diagnosis '7' is not a grade 0-4"),
    ("0001ab01,", r"train.csv:3: diagnosis '' is not a grade 0-4"),
    ("0001ab01,mild", r"train.csv:3: diagnosis 'mild'"),
    ("0000ab00,1", r"train.csv:3: id_code '0000ab00' is listed twice \(first on line 2\)"),
])
def test_aptos_bad_csv_row_names_file_and_line(tmp_path, row, expected):
    root = make_aptos(tmp_path)
    csv = root / "aptos2019-blindness-detection" / "train.csv"
    lines = csv.read_text().splitlines()
    lines[2] = row
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as exc:
        build_dataset("aptos2019", root)
    assert re.search(expected, _one_line(exc))


def test_aptos_missing_column_and_missing_image(tmp_path):
    root = make_aptos(tmp_path)
    folder = root / "aptos2019-blindness-detection"
    (folder / "train_images" / "0004ab04.png").unlink()
    with pytest.raises(DatasetError) as exc:
        build_dataset("aptos2019", root)
    assert "0004ab04.*: image listed in train.csv:6 not found" in _one_line(exc)
    skipped = build_dataset("aptos2019", root, skip_bad=True)
    assert len(skipped) == 14 and skipped.skipped[0]["reason"] == "image listed in train.csv:6 not found"
    (folder / "train.csv").write_text("id,grade\na,1\n")
    with pytest.raises(DatasetError, match="header lacks column\\(s\\) id_code, diagnosis"):
        build_dataset("aptos2019", root)


def test_aptos_images_not_in_the_csv_are_left_out_with_a_note(tmp_path):
    root = make_aptos(tmp_path)
    save_rgb(9, root / "aptos2019-blindness-detection" / "train_images" / "stray.png")
    ds = build_dataset("aptos2019", root)
    assert len(ds) == 15 and "stray" not in ds.ids
    assert ds.notes == ["1 image(s) in train_images/ are not listed in train.csv and are left out, "
                        "e.g. 'stray'"]


def test_aptos_truncated_image_is_named_at_load_and_left_out_under_skip_bad(tmp_path):
    root = make_aptos(tmp_path)
    truncate(root / "aptos2019-blindness-detection" / "train_images" / "0002ab02.png")
    ds = build_dataset("aptos2019", root)
    with pytest.raises(DatasetError, match="0002ab02.png: unreadable or truncated image"):
        ds.load(ds.index_of("0002ab02"))
    report = check_dataset("aptos2019", root)
    assert not report.ok and "0002ab02.png" in report.problems[0]["path"]
    assert report.splits["all"].samples == 14


def test_isic_official_parts_are_the_splits(tmp_path):
    ds = build_dataset("isic2017", make_isic(tmp_path))
    assert ds.classes == ("melanoma", "seborrheic_keratosis", "nevus") and len(ds) == 15
    assert {sp: len(ds.split_indices(sp)) for sp in ("train", "val", "test")} == \
        {"train": 9, "val": 3, "test": 3}
    assert ds.samples[ds.index_of("ISIC_0000009")].split == "val"
    labels = [ds.samples[ds.index_of(f"ISIC_{k:07d}")].meta["label"] for k in range(3)]
    assert labels == [0, 1, 2]  # melanoma, seborrheic keratosis, neither = nevus
    assert not any("superpixels" in i for i in ds.ids)
    assert ds.load(0).image.shape == (H, W, 3) and not ds.notes


def test_isic_one_part_is_split_by_seed_within_class(tmp_path):
    ds = build_dataset("isic2017", make_isic(tmp_path, (("Training", 9),)),
                       fractions=(0.34, 0.33, 0.33))
    assert all(counts == Counter(range(3)) for counts in _per_split(ds).values())
    assert "splits drawn by seed" in ds.notes[0]
    two = build_dataset("isic2017", make_isic(tmp_path / "b", (("Training", 6), ("Validation", 3))))
    assert len(two.split_indices("test")) == 0 and "no ground truth for the test split" in two.notes[0]


@pytest.mark.parametrize("row, expected", [
    ("ISIC_0000001,1.0,1.0", r"_Training_Part3_GroundTruth.csv:3: both melanoma and seborrheic_keratosis"),
    ("ISIC_0000001,0.5,0.0", r"_Training_Part3_GroundTruth.csv:3: melanoma '0.5' must be 0 or 1"),
    ("ISIC_0000001,0.0", r"_Training_Part3_GroundTruth.csv:3: row has fewer fields"),
    ("ISIC_9999999,1,0", r"ISIC_9999999.\*: image listed in ISIC-2017_Training_Part3_GroundTruth.csv:3"),
])
def test_isic_bad_row_names_file_and_line(tmp_path, row, expected):
    root = make_isic(tmp_path)
    csv = root / "ISIC-2017_Training_Part3_GroundTruth.csv"
    lines = csv.read_text().splitlines()
    lines[2] = row
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as exc:
        build_dataset("isic2017", root)
    assert re.search(expected, _one_line(exc))


def test_isic_part_without_its_image_folder(tmp_path):
    root = make_isic(tmp_path)
    (root / "ISIC-2017_Validation_Data").rename(root / "elsewhere")
    with pytest.raises(DatasetError, match="Part3_GroundTruth.csv: its image folder .* is missing"):
        build_dataset("isic2017", root)


def test_classes_folders_sorted_and_split_by_seed_within_class(tmp_path):
    root = make_classes(tmp_path)
    ds = build_dataset("classes", root, fractions=(0.34, 0.33, 0.33))
    assert ds.classes == ("cat", "dog", "zebra") and len(ds) == 11
    assert "dog_001" in ds.ids and ds.samples[ds.index_of("dog_001")].meta["label"] == 1
    assert all(set(c) == {0, 1, 2} for c in _per_split(ds).values())
    ordered = build_dataset("classes", root, classes=["zebra", "cat", "dog"])
    assert ordered.classes == ("zebra", "cat", "dog")
    assert ordered.load(ordered.index_of("zebra_000")).label == 0
    assert ordered.fingerprint() != ds.fingerprint()
    grey = build_dataset("classes", root, channels=1)
    assert grey.load(0).image.shape == (H, W, 1)


def test_classes_split_folders_are_the_splits(tmp_path):
    ds = build_dataset("classes", make_classes(tmp_path, splits=True))
    assert ds.classes == ("cat", "dog", "zebra")
    assert {sp: len(ds.split_indices(sp)) for sp in ("train", "val", "test")} == \
        {"train": 11, "val": 2, "test": 2}
    assert ds.samples[ds.index_of("test_zebra_000")].split == "test"


def test_classes_unknown_and_unlisted_class(tmp_path):
    root = make_classes(tmp_path)
    with pytest.raises(DatasetError) as exc:
        build_dataset("classes", root, classes=["cat", "dog", "zebra", "okapi"])
    assert "unknown class 'okapi'" in _one_line(exc) and "folders: cat, dog, zebra" in str(exc.value)
    with pytest.raises(DatasetError) as exc:
        build_dataset("classes", root, classes=["cat", "dog"])
    assert "zebra is not one of the listed classes (cat, dog)" in _one_line(exc)
    with pytest.raises(DatasetError, match="must be a list of distinct folder names"):
        build_dataset("classes", root, classes="cat")


def test_classes_truncated_image_under_check(tmp_path):
    root = make_classes(tmp_path)
    save_rgb(1, root / "cat" / "bad.png")
    truncate(root / "cat" / "bad.png")
    report = check_dataset("classes", root)
    assert [p["path"].endswith("bad.png") for p in report.problems] == [True]
    assert build_dataset("classes", root, skip_bad=True).skipped[0]["path"].endswith("bad.png")


def test_classes_says_its_order_and_can_be_graded(tmp_path):
    """A newcomer is told that folder names are sorted alphabetically (datasets check prints the
    dataset's notes), and can declare ordered grades: kappa is then reported."""
    from typer.testing import CliRunner

    from featcache.cli import app
    from featcache.evaluate.class_scores import ClassificationScores

    root = make_classes(tmp_path)
    result = CliRunner().invoke(app, ["datasets", "check", "-d", "classes", "-r", str(root)],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "sorted alphabetically: 0 cat, 1 dog, 2 zebra" in text and "graded: true" in text

    plain = build_dataset("classes", root)
    graded = build_dataset("classes", root, graded=True)
    assert (plain.graded, graded.graded) == (False, True) and graded.describe()["graded"]
    assert graded.fingerprint() == plain.fingerprint()  # the same data: the same store entries
    listed = build_dataset("classes", root, classes=["cat", "dog", "zebra"], graded=True)
    assert not listed.notes  # the order was chosen, so there is nothing to point out
    with pytest.raises(DatasetError, match="graded must be true or false"):
        build_dataset("classes", root, graded="yes")

    scores = ClassificationScores()
    scores.declare("classes", listed.classes, listed.graded)
    probs = np.eye(3, dtype=np.float32)
    for k in range(6):
        scores.add(f"s{k}", "classes", "test", k % 3, probs[(k + (k == 5)) % 3])
    assert scores.summary_rows()[0]["kappa"] is not None
