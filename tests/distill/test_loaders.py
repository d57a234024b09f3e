import os
import pickle

import pytest
import torch

from featcache.distill.loaders import EpochBatches, low_priority_workers, make_loader, resolve_workers
from featcache.distill.trainer import Trainer
from featcache.errors import ConfigError
from tests.distill.conftest import make_manifest


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])), k


def test_items_pickle_into_spawned_workers(cached_store, tmp_path):
    """Readers hold locks and caches: DistillItems must still travel to spawn/forkserver workers
    (macOS's default) and read the same features there."""
    trainer = Trainer(make_manifest(cached_store, tmp_path / "run", training={"num_workers": 0}))
    items = trainer.data.train_set
    items[0]  # warm the readers' fast-path caches (the unpicklable part)
    clone = pickle.loads(pickle.dumps(items))
    assert any(k.startswith("f:") for k in clone[3])  # the stored maps, finished in the trainer
    _same(items[3], clone[3])
    loader = torch.utils.data.DataLoader(items, batch_size=2, num_workers=1,
                                         multiprocessing_context="spawn")
    batch = next(iter(loader))
    _same(batch, torch.utils.data.default_collate([items[0], items[1]]))


def test_prefetching_loader_matches_in_process_reads(cached_store, tmp_path):
    """Worker processes deliver exactly the batches an in-process loop would, epoch after epoch
    from one iterator: each epoch's seeded draw, cut into steps_per_epoch batches."""
    trainer = Trainer(make_manifest(cached_store, tmp_path / "run", training={"num_workers": 2}))
    assert trainer.data.workers == 2
    batches = trainer._train_batches(0)
    assert trainer._train.prefetch_factor == 4
    steps = trainer.data.steps_per_epoch
    with_workers = [next(batches)["index"].tolist() for _ in range(2 * steps)]
    epochs = EpochBatches(trainer.data.sampler.draw, 4, trainer.data.drop_last, 0, 2, steps)
    plain = make_loader(trainer.data.train_set, 4, 0, 4, torch.device("cpu"), batches=epochs)
    assert [b["index"].tolist() for b in plain] == with_workers
    items = [trainer.data.train_items[i][1] for i in trainer.data.sampler.draw(1)]
    assert sum(with_workers[steps:], []) == items[:4 * steps]  # the second epoch is epoch 1's draw


def test_epoch_batches_drop_the_short_tail():
    epochs = EpochBatches(lambda e: list(range(10 * e, 10 * e + 5)), 2, True, 1, 3, 2)
    assert list(epochs) == [[10, 11], [12, 13], [20, 21], [22, 23]] and len(epochs) == 4
    whole = EpochBatches(lambda e: [e], 4, False, 0, 2, 1)
    assert list(whole) == [[0], [1]]


def test_worker_count(monkeypatch):
    import featcache.distill.loaders as loaders

    monkeypatch.setattr(loaders, "available_cpus", lambda: 16)
    assert resolve_workers("auto") == 4 and resolve_workers("auto", world_size=8) == 1
    monkeypatch.setattr(loaders, "available_cpus", lambda: 1)
    assert resolve_workers("auto") == 0 and resolve_workers(3) == 3
    with pytest.raises(ConfigError, match="num_workers"):
        resolve_workers(-1)


class _DecoderThreads(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, k):
        from numcodecs import blosc

        return blosc.get_nthreads()


def test_workers_decode_on_one_thread():
    """A worker beside a training process that uses every core must not start decoder threads."""
    loader = make_loader(_DecoderThreads(), 2, 1, 2, torch.device("cpu"))
    assert next(iter(loader)).tolist() == [1, 1]


class _Niceness(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, k):
        return os.nice(0)


@pytest.mark.skipif(not hasattr(os, "nice"), reason="no process niceness on this platform")
@pytest.mark.parametrize("low", [True, False])
def test_low_priority_workers_run_at_nice_19(low):
    """On the CPU the workers must yield the cores to the training threads; otherwise they keep
    the training process's priority."""
    loader = make_loader(_Niceness(), 2, 1, 2, torch.device("cpu"), low_priority=low)
    assert next(iter(loader)).tolist() == ([19, 19] if low else [os.nice(0)] * 2)


def test_worker_priority_is_low_only_when_asked():
    assert not low_priority_workers("auto", torch.device("cpu"))  # starves on a shared machine
    assert not low_priority_workers("auto", torch.device("cuda"))
    assert low_priority_workers("low", torch.device("cuda"))
    assert not low_priority_workers("normal", torch.device("cpu"))
