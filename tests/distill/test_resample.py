"""Teacher features onto the student's frame: area averaging onto a coarser grid must average
exactly the teacher cells each student cell covers, never the teacher's padding, and weigh
cells by how much of them the teacher saw."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featcache.distill.model import _to_grid
from featcache.distill.resample import teacher_targets
from featcache.distill.targets import loss_grid


def teacher_target(feature, norm, box, grid):
    """One map (C, h, w) through the batched resampling, as a batch of one."""
    feature = torch.as_tensor(feature)
    target, valid = teacher_targets(feature[None], norm, np.asarray(box, np.float32)[None], grid)
    return target[0], valid[0]


def warp_to_student_frame(feature, box):
    return teacher_target(feature, None, box, None)




def _feature(c=3, h=8, w=8, seed=0):
    return np.random.default_rng(seed).normal(size=(c, h, w)).astype(np.float32)


def test_whole_image_box_is_plain_average_pooling():
    f = _feature()
    target, valid = teacher_target(f, None, np.array([0, 0, 1, 1.0]), (4, 4))
    torch.testing.assert_close(target, F.avg_pool2d(torch.from_numpy(f)[None], 2)[0])
    assert torch.equal(valid, torch.ones(1, 4, 4))


@pytest.mark.parametrize("image_on", ["left", "top"])
def test_padding_never_enters_a_mean(image_on):
    f = _feature()
    f[:, :, 4:] = 1000.0  # the teacher's padding: the image fills the left half of its input
    box = np.array([0, 0, 1, 0.5])
    if image_on == "top":
        f, box = f.transpose(0, 2, 1).copy(), np.array([0, 0, 0.5, 1])
    target, valid = teacher_target(f, None, box, (4, 4))
    # Each student cell covers 2 teacher cells along the image's long side, 1 across.
    expected = torch.from_numpy(f[:, :, :4]).unflatten(1, (4, 2)).mean(2)
    if image_on == "top":
        expected = torch.from_numpy(f[:, :4, :]).unflatten(2, (4, 2)).mean(3)
    torch.testing.assert_close(target, expected)
    assert target.abs().max() < 100 and torch.equal(valid, torch.ones(1, 4, 4))


def test_validity_is_the_fraction_the_teacher_saw():
    # A centre crop: the image extends a quarter of a teacher width beyond each side, so each
    # student cell is 3/8 of a teacher width; the outer ones see 1/8 of it, a third.
    f = _feature()
    target, valid = teacher_target(f, None, np.array([0, -0.25, 1, 1.25]), (4, 4))
    np.testing.assert_allclose(valid[0, 0].numpy(), [1 / 3, 1, 1, 1 / 3], atol=1e-6)
    columns = torch.from_numpy(f).unflatten(1, (4, 2)).mean(2)  # (C, 4, 8): rows pooled in pairs
    # A partly seen cell averages only the seen part: cell 0 is teacher column 0, cell 1 columns 1-3.
    torch.testing.assert_close(target[:, :, 0], columns[:, :, 0])
    torch.testing.assert_close(target[:, :, 1], columns[:, :, 1:4].mean(2))
    # Beyond the teacher's input altogether: no value and no weight.
    target, valid = teacher_target(f, None, np.array([0, -0.5, 1, 1.5]), (4, 4))
    assert torch.all(valid[..., [0, 3]] == 0) and torch.all(target[..., [0, 3]] == 0)


def test_normalisation_commutes_with_averaging():
    f = _feature(seed=1)
    mean, inv_std = np.float32([1, 2, 3]), np.float32([0.5, 2, 4])
    box = np.array([0, 0, 1, 0.75])
    target, valid = teacher_target(f, (mean, inv_std), box, (4, 4))
    raw, _ = teacher_target(f, None, box, (4, 4))
    expected = (raw - torch.from_numpy(mean)[:, None, None]) * torch.from_numpy(inv_std)[:, None, None]
    torch.testing.assert_close(target, expected)


def test_close_to_warping_then_pooling_inside_the_image():
    # The model's own path (bilinear warp on the teacher grid, then validity-weighted pooling)
    # and the loader's one-pass area average agree on a smooth map away from the borders.
    y, x = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    f = torch.stack([torch.sin(3 * y + 2 * x), y * x])
    box = np.array([0, 0, 1, 0.8])
    warped, ok = warp_to_student_frame(f, box)
    slow, slow_valid = _to_grid(warped[None], ok[None], (32, 32))
    fast, fast_valid = teacher_target(f.numpy(), None, box, (32, 32))
    torch.testing.assert_close(fast[:, 2:-2, 2:-2], slow[0, :, 2:-2, 2:-2], atol=0.02, rtol=0)
    torch.testing.assert_close(fast_valid, slow_valid[0])


@pytest.mark.parametrize("box", [[0, 0, 1, 0.5], [0.1, -0.2, 0.95, 1.3], [0, 0, 1, 1.0]])
def test_finer_or_equal_grid_is_the_bilinear_warp_of_grid_sample(box):
    """On the teacher's own grid the separable weights are grid_sample's (bilinear, zero padding)
    on the box's affine grid, and the validity is grid_sample of ones > 0.5."""
    f = torch.from_numpy(_feature())
    target, valid = teacher_target(f, None, box, (8, 8))
    y0, x0, y1, x1 = box
    theta = torch.tensor([[[x1 - x0, 0.0, x0 + x1 - 1.0], [0.0, y1 - y0, y0 + y1 - 1.0]]])
    grid = F.affine_grid(theta, [1, 1, 8, 8], align_corners=False)
    expected = F.grid_sample(f[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    ones = F.grid_sample(torch.ones(1, 1, 8, 8), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)[0]
    torch.testing.assert_close(target, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(valid, (ones > 0.5).float())


def test_each_row_of_a_batch_is_resampled_with_its_own_box():
    """A batch mixing boxes (images of several shapes) gives each row what it gives alone."""
    f = torch.from_numpy(np.stack([_feature(seed=s) for s in range(4)]))
    boxes = np.float32([[0, 0, 1, 1], [0, 0, 1, 0.5], [0, 0, 1, 1], [0.2, 0, 0.8, 1]])
    norm = (np.float32([1, 2, 3]), np.float32([0.5, 2, 4]))
    for grid in [(4, 4), None]:
        target, valid = teacher_targets(f, norm, boxes, grid)
        for i in range(4):
            alone, ok = teacher_target(f[i], norm, boxes[i], grid)
            torch.testing.assert_close(target[i], alone)
            assert torch.equal(valid[i], ok)


def test_loss_grid_follows_the_projector():
    assert loss_grid((64, 64), 128, 4, "coarser") == (32, 32)  # LiteMedSAM at dec3, 128 px
    assert loss_grid((64, 64), 128, 4, "teacher") == (64, 64)
    assert loss_grid((64, 64), 512, 4, "coarser") == (64, 64)  # the stage is finer
    assert loss_grid((64, 64), 130, 4, "coarser") == (64, 64)  # grid unknown: the model pools


@pytest.mark.parametrize(("size", "grid"), [((8, 8), (4, 4)), ((7, 5), (3, 2)), ((16, 16), (16, 16))])
def test_student_stages_finer_than_the_teacher_are_exact_cell_means(size, grid):
    """area_pool: each output cell is the overlap-weighted mean of the input over its region, for
    any ratio (a 14x14 ViT grid under a 32x32 stage as much as 64 under 128)."""
    from featcache.distill.resample import area_pool

    x = torch.randn(2, 3, *size, dtype=torch.float64)
    got = area_pool(x.float(), grid).double()
    # Brute force on a fine common grid: repeat each input cell, then average blocks.
    fine = x.repeat_interleave(grid[0], 2).repeat_interleave(grid[1], 3)
    expected = fine.unflatten(2, (grid[0], size[0])).unflatten(4, (grid[1], size[1])).mean((3, 5))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("box", [[0, 0, 1, 1.0], [0, 0, 0.4, 1.0], [-0.1, 0, 1.1, 1.0]])
@pytest.mark.parametrize("grid", [None, (1, 1), (4, 4)])
def test_a_one_cell_level_is_the_image_vector_whatever_the_box(box, grid):
    """A (C, 1, 1) level (a teacher's `global` vector) describes the whole image: no box warps it
    (bilinear warping of a padded image's one cell blended it with the padding: 0.7x the vector
    for a box of height 0.4), and it is valid everywhere; normalisation still applies."""
    f = _feature(c=4, h=1, w=1)
    norm = (np.full(4, 0.5, np.float32), np.full(4, 2.0, np.float32))
    target, valid = teacher_target(f, norm, np.array(box), grid)
    torch.testing.assert_close(target, (torch.from_numpy(f) - 0.5) * 2.0)
    assert torch.equal(valid, torch.ones(1, 1, 1))
