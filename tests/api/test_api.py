"""The Python API: entries with provenance, the Dataset of images, masks and aligned features, and
a trained student's predict(image); `import featcache` stays light."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import featcache
from featcache.distill.data import DistillItems
from featcache.distill.loaders import make_loader
from featcache.errors import ConfigError, StoreError
from featcache.evaluate.predictor import Predictor
from tests.evaluate.conftest import blob_image, tiny_run  # noqa: F401  (fixture)


def test_import_featcache_does_not_import_torch():
    code = "import sys, featcache; assert 'torch' not in sys.modules and 'zarr' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_store_entries_with_provenance_features_frames_and_stats(api_store):
    store = featcache.open_store(api_store.url)
    assert sorted(e.teacher for e in store.entries()) == ["tiny", "tiny2"]
    entry = store.find(teacher="tiny", dataset="blobs")[0]
    reader = api_store.open(entry.key)
    assert entry.levels == {"fine": (8, 16, 16), "coarse": (16, 8, 8)} and entry.views == 2
    assert entry.provenance["teacher"]["weights_source"] == "random-init(seed=0)"
    assert "fingerprint" in entry.provenance["dataset"] and "layout" not in entry.provenance
    by_id = entry.features("fine", "blob03", view=1)
    np.testing.assert_array_equal(by_id, reader.read(reader.index_of("blob03"), "fine", 1))
    np.testing.assert_array_equal(entry.features("coarse", 0), reader.read(0, "coarse", 0))
    assert entry.frame("blob03").shape == (4,) and set(entry.stats("fine")) >= {"mean", "std"}
    assert store.find(teacher="nobody") == []
    with pytest.raises(StoreError, match="no sample 'nope'"):
        entry.features("fine", "nope")


def test_dataset_yields_images_masks_and_aligned_features(api_store):
    store = featcache.open_store(api_store.url)
    entries = store.find(dataset="blobs")
    data = featcache.CachedFeatures(entries, split="train", image_size=32)
    assert isinstance(data, DistillItems)  # the training loader's own Dataset
    train = [s for s in data.sources[0].dataset.samples if s.split == "train"]
    assert len(data) == 2 * len(train)  # every stored view
    item = data[1]
    assert item["image"].shape == (1, 32, 32) and item["mask"].shape == (1, 32, 32)
    assert item["features"]["tiny/fine"].shape == (8, 16, 16)
    assert item["features"]["tiny2/coarse"].dtype == torch.float32
    assert item["valid"]["tiny/fine"].shape == (1, 16, 16)
    # The same values the trainer's loader gives (it carries them as float16).
    plain = DistillItems(sources=data.sources, items=data.items, targets=data.targets, image_size=32,
                         channels=1, normalisation="standardize", with_teachers=True)
    trainer_batch = next(iter(make_loader(plain, 3, 0, 1, torch.device("cpu"))))  # finished batched
    key = next(t.key for t in data.targets if (t.teacher, t.level) == ("tiny2", "fine"))
    torch.testing.assert_close(item["features"]["tiny2/fine"], trainer_batch[f"t:{key}"][1].float())
    torch.testing.assert_close(item["mask"], trainer_batch["mask"][1])
    batch = next(iter(DataLoader(data, batch_size=3)))
    assert batch["features"]["tiny/coarse"].shape == (3, 16, 8, 8)
    coarse = featcache.CachedFeatures(entries[0], levels=["fine"], grid=(4, 4), image_size=32)
    assert list(coarse[0]["features"]) == [f"{entries[0].teacher}/fine"]
    assert coarse[0]["features"][f"{entries[0].teacher}/fine"].shape == (8, 4, 4)


def test_dataset_errors_are_one_line(api_store):
    entry = featcache.open_store(api_store.url).find(teacher="tiny")[0]
    with pytest.raises(StoreError, match="no level 'deep'"):
        featcache.CachedFeatures([entry], levels=["deep"])
    with pytest.raises(ConfigError, match="at least one entry"):
        featcache.CachedFeatures([])
    with pytest.raises(ConfigError, match="both teacher tiny"):
        featcache.CachedFeatures([entry, entry])


def test_load_student_predicts_probabilities_at_the_image_size(tiny_run):  # noqa: F811
    model = featcache.load_student(tiny_run)
    image = blob_image(45, 60)
    prob = model.predict(image)
    assert prob.shape == (45, 60) and prob.dtype == np.float32 and 0 <= prob.min() <= prob.max() <= 1
    same = Predictor.from_run(tiny_run).probabilities([image[:, :, None] / 255.0])[0]
    np.testing.assert_allclose(prob, same, atol=1e-6)
    assert model.predict_mask(image).dtype == bool
    assert isinstance(model.student, torch.nn.Module)


def test_own_head_example_trains_on_a_tiny_store(api_store, capsys):
    import runpy
    from pathlib import Path

    script = Path(__file__).parents[2] / "pipelines" / "own_head_example.py"
    main = runpy.run_path(str(script))["main"]
    score = main(["--store", api_store.url, "--dataset", "blobs", "--teacher", "tiny", "--level", "fine",
                  "--epochs", "2", "--image-size", "32"])
    assert 0.0 <= score <= 1.0 and "val pooled Dice" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--store", api_store.url, "--teacher", "nobody"])
    assert "featcache extract --teacher nobody" in capsys.readouterr().err
