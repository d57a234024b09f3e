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
