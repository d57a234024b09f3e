"""Fingerprints: stable, sensitive to content, fast on repeats thanks to the digest cache."""

import os

import featcache.data.digest as digest
from featcache.data.registry import build_dataset
from tests.data.synth_layouts import box_mask, make_cvc, make_msd, save_mask


def _count_hashing(monkeypatch):
    calls = []
    real = digest.sha256_of

    def counting(path, *a, **k):
        calls.append(path)
        return real(path, *a, **k)

    monkeypatch.setattr(digest, "sha256_of", counting)
    return calls


def test_fingerprint_stable_and_cached(tmp_path, monkeypatch):
    root = make_cvc(tmp_path)
    calls = _count_hashing(monkeypatch)
    first = build_dataset("cvc-clinicdb", root).fingerprint()
    assert len(calls) == 12  # 6 images + 6 masks, each hashed once
    second = build_dataset("cvc-clinicdb", root).fingerprint()
    assert second == first and len(calls) == 12  # served from the cache: no file re-read
    cache = digest.cache_dir()
    assert (cache / "files.sqlite3").exists()
    assert not any(p.name.endswith(".sqlite3") for p in root.rglob("*"))  # nothing in the dataset


def test_fingerprint_changes_when_a_file_changes(tmp_path):
    root = make_cvc(tmp_path)
    before = build_dataset("cvc-clinicdb", root).fingerprint()
    mask = root / "Ground Truth" / "4.tif"
    stat = mask.stat()
    save_mask(box_mask(0, 2, 0, 2), mask)
    os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    after = build_dataset("cvc-clinicdb", root).fingerprint()
    assert after != before


def test_fingerprint_depends_on_options_and_split_not_on_location(tmp_path):
    a = build_dataset("cvc-clinicdb", make_cvc(tmp_path / "a"))
    b = build_dataset("cvc-clinicdb", make_cvc(tmp_path / "b"))
    assert a.fingerprint() == b.fingerprint()  # same bytes elsewhere: same fingerprint
    assert build_dataset("cvc-clinicdb", make_cvc(tmp_path / "c"), seed=5).fingerprint() != a.fingerprint()
    assert build_dataset("cvc-clinicdb", tmp_path / "a", skip_bad=True).fingerprint() == a.fingerprint()


def test_msd_fingerprint_reads_each_volume_once_and_tracks_options(tmp_path, monkeypatch):
    root = make_msd(tmp_path, n=3)
    calls = _count_hashing(monkeypatch)
    ds = build_dataset("msd", root)
    fp = ds.fingerprint()
    assert len(calls) == 6 and len(ds) == 18
    assert build_dataset("msd", root, labels=2).fingerprint() != fp
    assert build_dataset("msd", root).fingerprint() == fp


def test_unwritable_cache_is_bypassed(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FEATCACHE_CACHE_DIR", str(blocker / "cache"))
    root = make_cvc(tmp_path)
    ds = build_dataset("cvc-clinicdb", root)
    assert len(ds.fingerprint()) == 64


def test_digest_cache_key_includes_size_and_mtime(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc")
    first = digest.file_digest(p)
    p.write_bytes(b"abcd")
    assert digest.file_digest(p) != first
    assert digest.file_digest(p) == digest.sha256_of(p)
