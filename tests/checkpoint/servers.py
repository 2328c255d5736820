"""Storage servers for the checkpoint store and state tests: moto in server mode (S3) and a GCS
emulator (behind a layer that enforces Cloud Storage's request preconditions), each a real
process on a loopback port, always stopped at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.state.gcs_preconditions import PreconditionLayer
from tests.support import free_ports

REPO = Path(__file__).resolve().parents[2]


def _require(tool: str) -> str:
    path = shutil.which(tool) or os.path.join(os.path.dirname(sys.executable), tool)
    if not os.access(path, os.X_OK):
        message = f"{tool} is not installed (pip install -e '.[test]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@contextmanager
def _server(command: list[str], url: str, what: str, cwd: Path | None = None) -> Iterator[str]:
    # The server's log goes to a file: a pipe nobody reads fills up after some thousand
    # requests (moto logs each one) and then blocks the server for good.
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log,
                               start_new_session=True, cwd=cwd)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"{what} did not start: "
                                       f"{log.read().decode(errors='replace')[-2000:]}") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextmanager
def moto_server() -> Iterator[dict[str, str]]:
    """moto in server mode (every AWS service) on a loopback port; yields the environment for
    boto3 clients (``AWS_ENDPOINT_URL`` and test credentials). Runs ``tests.aws.moto_main``:
    moto's own server with one bug fixed (see there)."""
    _require("moto_server")
    port = free_ports(1)[0]
    with _server([sys.executable, "-m", "tests.aws.moto_main", "-H", "127.0.0.1", "-p", str(port)],
                 f"http://127.0.0.1:{port}/moto-api/", "moto_server", cwd=REPO):
        yield {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def moto_s3(bucket: str) -> Iterator[dict[str, str]]:
    """:func:`moto_server` with ``bucket`` made."""
    with moto_server() as env:
        import boto3

        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing"
                     ).create_bucket(Bucket=bucket)
        yield env


@dataclass(frozen=True)
class GcsServer:
    """A running GCS emulator behind the precondition layer (``tests/state/gcs_preconditions.py``:
    the emulator itself ignores ``ifGenerationMatch``)."""

    env: dict[str, str]  # for google-cloud-storage: STORAGE_EMULATOR_HOST names the layer
    layer: PreconditionLayer
    emulator_url: str  # the bare emulator, for tests of what it lacks

    def client(self, url: str | None = None) -> Any:
        """A google-cloud-storage client of the layer (or of ``url``), leaving os.environ be."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project=self.env["GOOGLE_CLOUD_PROJECT"],
                              credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": url or self.layer.url})

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(name)


@contextmanager
def gcs_server() -> Iterator[GcsServer]:
    """gcp-storage-emulator on a loopback port, behind the precondition layer on another."""
    port = free_ports(1)[0]
    with _server([_require("gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port",
                  str(port), "--in-memory"], f"http://127.0.0.1:{port}/", "GCS emulator"):
        emulator = f"http://127.0.0.1:{port}"
        with PreconditionLayer(emulator) as layer:
            yield GcsServer(env={"STORAGE_EMULATOR_HOST": layer.url,
                                 "GOOGLE_CLOUD_PROJECT": "test-project"},
                            layer=layer, emulator_url=emulator)


@contextmanager
def gcs_emulator(bucket: str) -> Iterator[dict[str, str]]:
    """:func:`gcs_server` with ``bucket`` made; yields the environment for
    google-cloud-storage."""
    with gcs_server() as server:
        server.create_bucket(bucket)
        yield server.env
