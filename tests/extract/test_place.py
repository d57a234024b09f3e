"""The main thread's copy of a batch's features into its shard buffer (pipeline._copy_into)."""

import torch

from featcache.extract.pipeline import _copy_into


def test_cpu_float32_is_copied_on_one_thread_and_others_through_torch():
    src = torch.randn(2, 3, 4, 5)
    dst = torch.empty(4, 2, 3, 4, 5)
    with torch.inference_mode():  # the teacher's output: an inference tensor
        out = src.clone().expand(3, *src.shape)  # a stand-in's features are an expanded view
        _copy_into(dst[1], out[2])
    assert torch.equal(dst[1], src)
    half = torch.empty(2, 3, 4, 5, dtype=torch.bfloat16)
    _copy_into(half, src)  # no bfloat16 in numpy: torch's copy, with its conversion
    assert torch.equal(half, src.to(torch.bfloat16))
