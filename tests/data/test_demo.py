import numpy as np

from featcache.data.registry import build_dataset


def test_demo_dataset_shapes_masks_and_split():
    data = build_dataset("demo", num_slices=12)
    assert len(data) == 12 and data.channels == 1
    sample = data.load(0)
    assert sample.image.dtype == np.float32 and sample.image.shape == (233, 197, 1)
    assert 0.0 <= sample.image.min() and sample.image.max() <= 1.0
    assert set(np.unique(sample.mask)) <= {0, 1} and sample.mask.sum() > 100
    again = build_dataset("demo", num_slices=12)
    assert [s.split for s in again.samples] == [s.split for s in data.samples]
    assert again.fingerprint() == data.fingerprint()
    assert {s.split for s in data.samples} == {"train", "val", "test"}
    # Adjacent slices stay together: no block is split across train/val/test.
    for g in {s.group for s in data.samples}:
        assert len({s.split for s in data.samples if s.group == g}) == 1
    assert build_dataset("demo", num_slices=12, target="brain").fingerprint() != data.fingerprint()


def test_demo_planes_give_coronal_and_sagittal_slices():
    data = build_dataset("demo", num_slices=6, planes=["coronal", "sagittal"])
    assert len(data) == 12 and {s.meta["plane"] for s in data.samples} == {"coronal", "sagittal"}
    coronal, sagittal = data.load(0), data.load(6)
    assert coronal.id.startswith("mni152_y") and coronal.image.shape == (189, 197, 1)
    assert sagittal.id.startswith("mni152_x") and sagittal.image.shape == (189, 233, 1)
    assert coronal.mask.sum() > 100 and sagittal.mask.sum() > 100
    # Splits per plane, in blocks; the axial default keeps the key older stores were made with.
    more = build_dataset("demo", num_slices=30, planes=["coronal"])
    assert {s.split for s in more.samples} == {"train", "val", "test"}
    assert "planes" not in build_dataset("demo", num_slices=6).options



def test_demo_left_grey_matter_is_one_side_of_the_grey_matter():
    """target gm_left: the grey matter of one hemisphere on the same images (a per-pixel probe
    cannot tell it from its mirror image); the default's key does not change."""
    from featcache.data.loaders.demo import _volume
    from featcache.data.volumes import slice_at

    left = build_dataset("demo", num_slices=6, target="gm_left")
    assert left.fingerprint() != build_dataset("demo", num_slices=6).fingerprint()
    assert build_dataset("demo", num_slices=6).options["target"] == "gm"
    sample, meta = left.load(2), left.samples[2].meta
    volume, gm = _volume("gm", "axial")  # the template through the recipe, the mask turned alike
    assert np.array_equal(sample.image, volume.plane(meta["slice"]))
    whole = gm[slice_at(meta["slice"], 2)]
    assert np.all(sample.mask <= whole) and 1.6 * sample.mask.sum() < whole.sum() < 2.4 * sample.mask.sum()
    columns = np.flatnonzero(sample.mask.any(0))  # one side of the midline only
    middle = sample.mask.shape[1] / 2
    assert columns.min() > middle - 5 or columns.max() < middle + 5
