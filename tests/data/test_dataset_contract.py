"""The contract every registered dataset keeps, run over EVERY name in the registry.

Loaders with a root are built on their synthetic miniature layout; a loader without an entry in
MAKERS must build with root=None (like the embedded `demo`), or this test fails: add a maker.
VARIANTS adds other forms of a loader (multi-class masks, 2D nnU-Net, official splits).
"""

import json

import numpy as np
import pytest

from featcache.data.base import SPLITS, TASKS, check_sample_id
from featcache.data.recipe import Recipe
from featcache.data.registry import DATASETS, build_dataset
from tests.data.synth_layouts import MAKERS, VARIANTS


def _build(case, tmp_path):
    if case in VARIANTS:
        name, make, options = VARIANTS[case]
        return name, make(tmp_path), options
    return case, (MAKERS[case](tmp_path) if case in MAKERS else None), {}


@pytest.mark.parametrize("case", sorted(DATASETS) + sorted(VARIANTS))
def test_dataset_contract(case, tmp_path):
    name, root, options = _build(case, tmp_path)
    ds = build_dataset(name, root, **options)
    assert len(ds) > 0 and ds.name == name
    assert len(set(ds.ids)) == len(ds.ids) and all(check_sample_id(i) for i in ds.ids)
    assert {s.split for s in ds.samples} <= set(SPLITS)
    groups = {}
    for s in ds.samples:
        groups.setdefault(s.group or s.id, set()).add(s.split)
        json.dumps(s.meta)  # metadata must be storable as JSON next to the features
    assert all(len(v) == 1 for v in groups.values()), "a group straddles splits"
    for i in sorted({0, len(ds) // 2, len(ds) - 1}):
        sample = ds.load(i)
        assert sample.id == ds.ids[i]
        assert sample.image.dtype == np.float32 and sample.image.ndim == 3
        assert sample.image.shape[2] == ds.channels
        assert 0.0 <= sample.image.min() and sample.image.max() <= 1.0
        assert sample.mask.dtype == np.uint8 and sample.mask.shape == sample.image.shape[:2]
        assert set(np.unique(sample.mask)) <= set(range(len(ds.classes) + 1))
        if ds.task == "classification":
            assert not sample.mask.any()  # classification samples carry an all-zero mask
            assert 0 <= sample.label < len(ds.classes) and sample.label == ds.samples[i].meta["label"]
        else:
            assert sample.label == -1
        assert len(ds.content_digest(i)) == 64
    fp = ds.fingerprint()
    assert len(fp) == 64 and build_dataset(name, root, **options).fingerprint() == fp
    described = ds.describe()
    assert sum(described["splits"].values()) == len(ds)
    assert described["task"] == ds.task in TASKS and described["classes"] == list(ds.classes)
    assert ds.classes and all(isinstance(c, str) for c in ds.classes)
    json.dumps(described)
    # The input recipe: data, saved with every run (JSON), naming the dataset's classes.
    recipe = ds.recipe
    assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    assert recipe.task == ds.task and recipe.labels.names == tuple(ds.classes)
