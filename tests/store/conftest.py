"""A real S3-compatible server (moto's standalone server) on loopback for the S3 backend tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """Endpoint URL of a moto server subprocess; stopped after the session."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("moto server exited at start")
                time.sleep(0.1)
        else:
            pytest.fail("moto server did not start")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_server):
    """(url prefix, storage_options) of a fresh bucket on the loopback server."""
    import boto3

    name = f"fc-{uuid.uuid4().hex[:10]}"
    options = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=name)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return f"s3://{name}/store", options
