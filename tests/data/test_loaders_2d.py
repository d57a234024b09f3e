"""BUSI, Kvasir-SEG, CVC-ClinicDB, DRIVE and folder on miniature synthetic copies of their layouts."""

import numpy as np
import pytest
from PIL import Image

from featcache.data.registry import build_dataset
from featcache.errors import DatasetError
from tests.data.synth_layouts import (
    H,
    W,
    box_mask,
    make_busi,
    make_cvc,
    make_drive,
    make_folder,
    make_kvasir,
    save_mask,
    save_rgb,
)


def test_busi_ids_classes_and_union_of_extra_masks(tmp_path):
    ds = build_dataset("busi", make_busi(tmp_path))
    assert len(ds) == 10
    assert "benign_2" in ds.ids and "normal_3" in ds.ids
    assert all(not i.startswith(("benign (", "normal (")) for i in ds.ids)
    info = ds.samples[ds.index_of("malignant_1")]
    assert info.meta["class"] == "malignant"
    two = ds.load(ds.index_of("benign_2"))
    expected = (box_mask(2, 8, 2, 8) | box_mask(12, 16, 14, 20)) > 0
    assert np.array_equal(two.mask, expected.astype(np.uint8))
    assert ds.samples[ds.index_of("benign_2")].meta["masks"] == 2
    one = ds.load(ds.index_of("benign_1"))
    assert one.mask.sum() == 36 and one.image.shape == (H, W, 3) and one.image.dtype == np.float32
    for nid in ("normal_1", "normal_2"):  # with an all-zero mask file, and with none at all
        assert ds.load(ds.index_of(nid)).mask.sum() == 0


def test_busi_split_is_deterministic_and_keeps_classes_in_every_split(tmp_path):
    root = make_busi(tmp_path)
    a, b = build_dataset("busi", root, seed=3), build_dataset("busi", root, seed=3)
    assert [s.split for s in a.samples] == [s.split for s in b.samples]
    for label in ("benign", "malignant", "normal"):
        splits = {s.split for s in a.samples if s.meta["class"] == label}
        assert splits == {"train", "val", "test"}
    other = [build_dataset("busi", root, seed=s) for s in range(4, 8)]
    assert any([x.split for x in o.samples] != [x.split for x in a.samples] for o in other)


def test_kvasir_jpeg_masks_are_thresholded(tmp_path):
    root = make_kvasir(tmp_path)
    raw = np.asarray(Image.open(root / "masks" / "cju000.jpg").convert("L"))
    assert len(np.unique(raw)) > 2  # JPEG ringing really is there
    ds = build_dataset("kvasir-seg", root)
    mask = ds.load(0).mask
    assert set(np.unique(mask)) == {0, 1}
    assert np.array_equal(mask, (raw >= 128).astype(np.uint8))
    yy, xx = np.mgrid[:32, :32]
    disc = ((yy - 16) ** 2 + (xx - 15) ** 2) < 64
    assert (mask != disc).mean() < 0.03


@pytest.mark.parametrize("ext", [".tif", ".png"])
def test_cvc_pairs_tif_or_png(tmp_path, ext):
    ds = build_dataset("cvc-clinicdb", make_cvc(tmp_path, ext=ext))
    assert ds.ids == [f"cvc_{i}" for i in range(1, 7)]  # sorted by stem
    assert ds.load(ds.index_of("cvc_3")).mask.sum() == 6 * 3
    assert ds.modality == "endoscopy"


def test_drive_official_split_val_carved_from_training_and_fov(tmp_path):
    ds = build_dataset("drive", make_drive(tmp_path), val_fraction=0.4)
    test = [s for s in ds.samples if s.split == "test"]
    assert sorted(s.id for s in test) == ["drive_test_01", "drive_test_02", "drive_test_03"]
    training = [s for s in ds.samples if s.meta["official_part"] == "training"]
    assert {s.split for s in training} == {"train", "val"}
    assert sum(s.split == "val" for s in training) == 2
    i = ds.index_of("drive_training_21")
    assert ds.samples[i].meta["fov"] == "training/mask/21_training_mask.gif"
    assert ds.fov_mask(i).shape == (H, W) and ds.fov_mask(i).all()
    assert ds.load(i).mask.sum() == 2 * W
    assert not ds.notes


def test_drive_without_test_labels_says_so_and_carves_test_from_training(tmp_path):
    ds = build_dataset("drive", make_drive(tmp_path, test_labels=False))
    assert all(s.meta["official_part"] == "training" for s in ds.samples)
    assert {s.split for s in ds.samples} == {"train", "val", "test"}
    assert len(ds.notes) == 1 and "3 test image(s) have no labels" in ds.notes[0]


def test_folder_mixed_formats_and_mask_suffix(tmp_path):
    ds = build_dataset("folder", make_folder(tmp_path))
    assert ds.ids == ["a", "b", "c", "d", "e", "f"]
    for i in range(len(ds)):
        s = ds.load(i)
        assert s.image.shape == (H, W, 3)
        assert s.mask.sum() == 64, ds.ids[i]  # JPEG mask 'f' is thresholded back to the box


def test_folder_grey_channels_split_file_and_group_regex(tmp_path):
    root = make_folder(tmp_path)
    grey = build_dataset("folder", root, channels=1)
    assert grey.channels == 1 and grey.load(0).image.shape == (H, W, 1)
    (root / "splits.csv").write_text("stem,split\na,test\nb,train\nc,train\nd,val\ne,train\nf,test\n")
    ds = build_dataset("folder", root)
    assert {s.id: s.split for s in ds.samples}["a"] == "test"
    with pytest.raises(DatasetError, match="group_regex"):
        build_dataset("folder", root, group_regex=r"^(z)")


def test_folder_group_regex_keeps_a_patient_in_one_split(tmp_path):
    root = tmp_path / "pat"
    for p in range(6):
        for k in range(3):
            save_rgb(p * 3 + k, root / "images" / f"P{p}_img{k}.png")
            save_mask(box_mask(1, 5, 1, 5), root / "masks" / f"P{p}_img{k}.png")
    ds = build_dataset("folder", root, group_regex=r"^(P\d+)_")
    by_group = {}
    for s in ds.samples:
        by_group.setdefault(s.group, set()).add(s.split)
    assert sorted(by_group) == [f"P{p}" for p in range(6)]
    assert all(len(splits) == 1 for splits in by_group.values())
    assert {s.split for s in ds.samples} == {"train", "val", "test"}


def test_sixteen_bit_grey_png_keeps_its_range(tmp_path):
    root = tmp_path / "ct"
    (root / "images").mkdir(parents=True)
    array = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    Image.fromarray(array).save(root / "images" / "x.png")
    (root / "masks").mkdir()
    Image.fromarray(box_mask(1, 5, 1, 5, 16, 16)).save(root / "masks" / "x.png")
    image = build_dataset("folder", root, channels=1).load(0).image
    assert image.min() == 0.0 and image.max() == 1.0 and len(np.unique(image)) == 256


def test_folder_pairs_isic_style_segmentation_suffix(tmp_path):
    root = tmp_path / "isic"
    save_rgb(1, root / "images" / "ISIC_0000001.jpg")
    save_mask(box_mask(1, 5, 1, 5), root / "masks" / "ISIC_0000001_segmentation.png")
    ds = build_dataset("folder", root)
    assert ds.ids == ["ISIC_0000001"] and ds.load(0).mask.sum() == 16
