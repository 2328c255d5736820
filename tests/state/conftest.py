"""Fixtures of the state tests: one moto server and one GCS emulator (behind its precondition
layer) per test module, each started only if a test of the module asks for it, and a fresh
bucket per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.checkpoint.servers import GcsServer, gcs_server, moto_server


@pytest.fixture(scope="module")
def moto_env() -> Iterator[dict[str, str]]:
    """moto in server mode for this module; the environment boto3 needs to reach it."""
    with moto_server() as env:
        yield env


@pytest.fixture
def s3_env(moto_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This test's process environment points boto3 at moto (the standard credential chain
    and ``AWS_ENDPOINT_URL``, as a user's would)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in moto_env.items():
        monkeypatch.setenv(name, value)
    return moto_env


@pytest.fixture
def bucket(s3_env: dict[str, str]) -> str:
    """A fresh, empty bucket on the module's moto server."""
    import boto3

    name = f"state-{uuid.uuid4().hex[:16]}"
    boto3.session.Session().client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def gcs_module_server() -> Iterator[GcsServer]:
    with gcs_server() as server:
        yield server


@pytest.fixture
def gcs(gcs_module_server: GcsServer, monkeypatch: pytest.MonkeyPatch) -> GcsServer:
    """The module's GCS emulator, with this test's process environment pointing
    google-cloud-storage at it (``STORAGE_EMULATOR_HOST``, as a user's would) and the layer's
    records and faults cleared."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    for name, value in gcs_module_server.env.items():
        monkeypatch.setenv(name, value)
    gcs_module_server.layer.reset()
    return gcs_module_server


@pytest.fixture
def gcs_bucket(gcs: GcsServer) -> str:
    """A fresh, empty bucket on the module's GCS emulator."""
    name = f"state-{uuid.uuid4().hex[:16]}"
    gcs.create_bucket(name)
    return name
