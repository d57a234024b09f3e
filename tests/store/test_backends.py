"""The store suite on every backend: a local folder, memory://, and S3 (a real moto server)."""

import uuid

import pytest

from tests.store.store_suite import StoreSuite


class TestLocal(StoreSuite):
    direct_reads = True
    @pytest.fixture
    def target(self, tmp_path):
        return str(tmp_path / "store"), None


class TestFileUrl(StoreSuite):
    direct_reads = True
    @pytest.fixture
    def target(self, tmp_path):
        return f"file://{tmp_path}/store", None


class TestMemory(StoreSuite):
    concurrency = "thread"  # memory:// lives in one process

    @pytest.fixture
    def target(self):
        return f"memory://fc-{uuid.uuid4().hex[:10]}/store", None


class TestS3(StoreSuite):
    @pytest.fixture
    def target(self, s3_bucket):
        return s3_bucket
