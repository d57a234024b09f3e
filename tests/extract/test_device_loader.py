"""The loader for a GPU teacher: the CPU decodes (8-bit files travel as uint8), the teacher's device
resizes and normalises; on the same device it gives the very inputs and entry the CPU path gives."""

import numpy as np
import torch

from featcache.data.registry import build_dataset
from featcache.extract.pipeline import _collate, _ViewItems, device_inputs, run_shards
from featcache.extract.runner import finalize_entry, plan_entry
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore
from tests.conftest import TinyTeacher
from tests.extract.helpers import write_folder


def _batch(data, teacher, on_device):
    return _collate([_ViewItems(data, teacher, view_seed=0, on_device=on_device)[(i, v)]
                     for i in range(3) for v in (0, 1)])


def test_device_inputs_equal_the_cpu_preparation(tmp_path, blobs):
    teacher = TinyTeacher()
    png = build_dataset("folder", write_folder(tmp_path / "data", n=3, size=24))
    for data, view0 in ((png, torch.uint8), (blobs, torch.float32)):  # 8-bit files; float images
        cpu, dev = _batch(data, teacher, False), _batch(data, teacher, True)
        assert dev["pixels"][0].dtype == view0  # view 1 is augmented: float32 either way
        assert dev["pixels"][1].dtype == torch.float32 and "x" not in dev
        x, boxes = device_inputs(dev["pixels"], teacher)
        assert torch.equal(x, cpu["x"]) and torch.equal(boxes.float(), cpu["box"].float())


def test_an_entry_extracted_through_the_device_path_is_the_same(tmp_path):
    teacher = TinyTeacher()
    data = build_dataset("folder", write_folder(tmp_path / "data", n=6, size=24))
    settings = ExtractSettings(shard_size=2, batch_size=2, views=2)
    entries = []
    for on_device in (False, True):
        store = FeatureStore(tmp_path / f"s{on_device}")
        plan = plan_entry(data, teacher, settings)
        writer = store.create_entry(plan.key, plan.layout, plan.attrs)
        run = run_shards(data, teacher, writer, plan.indices, plan.names, batch_size=2, loader_workers=0,
                         on_device=on_device)
        finalize_entry(store, writer, plan, run.stats, set(run.shards), 0.0)
        entries.append(store.open(plan.key))
    a, b = entries
    for i in range(6):
        for level in ("fine", "coarse"):
            assert np.array_equal(a.read(i, level), b.read(i, level))
        assert np.array_equal(a.frames(i), b.frames(i))
    assert a.stats("coarse")["phis"].tobytes() == b.stats("coarse")["phis"].tobytes()
