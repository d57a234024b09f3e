"""The numpy resizes of the ONNX Runtime path against torch's, which training and eval use."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featcache.evaluate.resize import to_student, upsample
from featcache.student import student_input


@pytest.mark.parametrize(("h", "w", "c", "size", "channels"),
                         [(50, 70, 1, 64, 1), (33, 41, 3, 64, 3), (233, 197, 3, 64, 1), (20, 24, 1, 32, 3),
                          (64, 64, 1, 64, 1)])
def test_numpy_resizes_match_torch(h, w, c, size, channels):
    rng = np.random.default_rng(h)
    image = rng.random((h, w, c)).astype(np.float32)
    np.testing.assert_allclose(to_student(image, size, channels),
                               student_input(image, size, channels).numpy(), atol=1e-6, rtol=0)
    logits = (5 * rng.standard_normal((2, size, size))).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(logits)[None], size=(h, w), mode="bilinear",
                             align_corners=False)[0].numpy()
    np.testing.assert_allclose(upsample(logits, (h, w)), expected, atol=1e-5, rtol=0)
