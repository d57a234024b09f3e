"""The input recipe as data, and applied: reading errors are one line, orientation uses the
header (nibabel's tools) and goes back exactly, and the demo's recipe reproduces the rot90 display
it always had."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from featcache.data.readers import Scan, read_scan
from featcache.data.recipe import Intensity, Labels, Recipe, Slicing
from featcache.data.serving import SlicedVolume, input_planes, label_values, scale, to_grid
from featcache.errors import ConfigError, DatasetError


def _scan(affine: np.ndarray, shape=(5, 6, 4)) -> Scan:
    rng = np.random.default_rng(0)
    return Scan(Path("v.nii.gz"), rng.uniform(0, 100, shape).astype(np.float32), affine)


def test_a_recipe_round_trips_and_bad_ones_are_named():
    recipe = Recipe("nifti", channels=1, intensity=Intensity("percentiles", 1, 99, "positive"),
                    slicing=Slicing(0, "PRS"), labels=Labels(("a", "b"), ((2,), (1, 3))))
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    with pytest.raises(ConfigError, match="unknown key 'window'"):
        Recipe.from_dict({**recipe.to_dict(), "window": [0, 1]})
    with pytest.raises(ConfigError, match="needs low < high"):
        Intensity("window", 5, 1)
    with pytest.raises(ConfigError, match="three axis codes"):
        Slicing(2, "RRS")


def test_the_demo_orientation_is_the_old_rot90_and_goes_back_exactly():
    """A RAS volume turned to PRS slices as np.rot90 of each stored axial slice did."""
    scan = _scan(np.diag([1.0, 1.0, 1.0, 1.0]))
    recipe = Recipe("nifti", channels=1, intensity=Intensity("window", 0, 100), slicing=Slicing(2, "PRS"))
    planes = input_planes(scan, recipe)
    for k, plane in enumerate(planes):
        assert np.array_equal(plane[:, :, 0], np.rot90(scale(scan.array[:, :, k], (0, 100), "v")[:, :, 0]))
    back = to_grid([p[:, :, 0] for p in planes], scan, recipe)  # slices back onto the stored grid
    assert np.array_equal(back, np.stack([scale(scan.array[:, :, k], (0, 100), "v")[:, :, 0]
                                          for k in range(4)], axis=2))


def test_orientation_follows_the_header():
    """An LPS volume (x to the left, y to the back) is turned to the same anatomy as its RAS twin."""
    ras = _scan(np.diag([1.0, 1.0, 1.0, 1.0]))
    lps = Scan(ras.source, ras.array[::-1, ::-1, :].copy(), np.diag([-1.0, -1.0, 1.0, 1.0]))
    recipe = Recipe("nifti", channels=1, intensity=Intensity("window", 0, 100), slicing=Slicing(2, "PRS"))
    for a, b in zip(input_planes(ras, recipe), input_planes(lps, recipe), strict=True):
        assert np.array_equal(a, b)
    maps = [np.full((6, 5), k, np.uint8) for k in range(4)]
    assert np.array_equal(to_grid(maps, lps, recipe), to_grid(maps, ras, recipe)[::-1, ::-1, :])


def test_label_values_go_back_to_the_files_values():
    recipe = Recipe("nifti", labels=Labels(("tumour", "organ"), ((2,), (1, 5))))
    classes = np.array([0, 1, 2, 2], np.uint8)
    assert label_values(classes, recipe).tolist() == [0, 2, 1, 1]
    assert label_values(np.array([0, 1], np.uint8), Recipe("image"), 255).tolist() == [0, 255]


def test_a_file_the_reader_does_not_open_is_one_line(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match="the nifti reader opens .nii"):
        read_scan(path, Recipe("nifti", slicing=Slicing()))


def test_a_4d_nifti_gives_the_recipes_channel(tmp_path):
    data = np.stack([np.zeros((3, 4, 2)), np.ones((3, 4, 2))], axis=3).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "mm.nii.gz"))
    scan = read_scan(tmp_path / "mm.nii.gz", Recipe("nifti", channel=1, slicing=Slicing()))
    assert scan.array.shape == (3, 4, 2) and scan.array.min() == 1 and scan.grid == (3, 4, 2)
    assert len(SlicedVolume(scan, Recipe("nifti", channel=1, slicing=Slicing()))) == 2
