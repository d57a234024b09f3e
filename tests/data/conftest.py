import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own digest cache: nothing is written under ~/.cache by the test suite."""
    monkeypatch.setenv("FEATCACHE_CACHE_DIR", str(tmp_path_factory.mktemp("featcache-cache")))
