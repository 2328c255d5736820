"""Checkpoint stores: where checkpoints live, chosen by URI.

| URI | store |
|-----|-------|
| ``file://path`` | a directory; a relative path is relative to the spec's directory |
| ``s3://bucket/prefix`` | Amazon S3 (boto3; ``AWS_ENDPOINT_URL`` points it elsewhere, e.g. moto) |
| ``gs://bucket/prefix`` | Google Cloud Storage (``STORAGE_EMULATOR_HOST`` for an emulator) |
| ``custom://package.module.Class/path`` | ``Class(path)``, a user's :class:`CheckpointStore` |

A store is a flat map of keys (``/``-separated, relative to the store's root) to bytes. It needs
no atomic rename or conditional write: the checkpoint layout (``provisioner.checkpoint.layout``)
writes every file of a checkpoint before the ``latest`` pointer, and a reader trusts only what
``latest`` or an explicit id names and verifies every digest, so a torn write is never used.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path

from provisioner.errors import ProvisionerError


class CheckpointError(ProvisionerError):
    """A checkpoint store cannot be used or a checkpoint cannot be written."""


class NoCheckpointError(CheckpointError):
    """No usable checkpoint: missing, corrupt, or from another lineage (``recover`` exit 4)."""

    exit_code = 4


class CheckpointStore(ABC):
    """What a checkpoint store does. Subclass it for ``custom://`` stores: the constructor takes
    the URI's path (the part after the class) as its one argument.

    Keys are relative paths such as ``checkpoints/<id>/manifest.yaml``.
    """

    uri: str = ""

    @abstractmethod
    def read(self, key: str) -> bytes | None:
        """The bytes under ``key``; None if there is no such key."""

    @abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (replacing what was there), durably, before returning."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix``, in any order."""

    def exists(self, key: str) -> bool:
        return self.read(key) is not None

    def location(self, key: str) -> str:
        """A URI for ``key`` that Ray can fetch a ``working_dir`` from where the store allows
        (``file://``, ``s3://``, ``gs://``); informative otherwise."""
        return f"{self.uri.rstrip('/')}/{key}"


class FileStore(CheckpointStore):
    """A directory. Files are written to a temporary name, fsynced and renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"file://{root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise CheckpointError(f"checkpoint key {key!r} leaves the store {self.root}")
        return path

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise CheckpointError(f"cannot read {self._path(key)}: {error.strerror}") from None

    def write(self, key: str, data: bytes) -> None:
        from provisioner.remote.runner import LocalRunner

        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            LocalRunner().put(str(path), data, mode=0o600)
        except OSError as error:
            raise CheckpointError(f"cannot write {path}: {error.strerror}",
                                  hint="check the checkpoint store's path and permissions") from None

    def list(self, prefix: str) -> list[str]:
        if not self.root.is_dir():
            return []
        keys = []
        for path in self.root.rglob("*"):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and not path.name.startswith(".") and key.startswith(prefix):
                keys.append(key)
        return keys


class _BucketStore(CheckpointStore):
    """A bucket and a key prefix in an object store (``<scheme>://<bucket>/<prefix>``)."""

    scheme = ""
    hint = ""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket_name, self.prefix = bucket, prefix.strip("/")
        self.uri = f"{self.scheme}://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, what: str, key: str, error: Exception) -> CheckpointError:
        return CheckpointError(
            f"{what} {self.scheme}://{self.bucket_name}/{self._key(key)} failed: {error}",
            hint=self.hint)


class S3Store(_BucketStore):
    scheme = "s3"
    hint = "check the bucket, the credentials and AWS_ENDPOINT_URL"
    _client = None

    @property
    def client(self):
        if self._client is None:
            import boto3  # lazy: the CLI starts without it
            from botocore.config import Config

            self._client = boto3.client("s3", config=Config(retries={"mode": "standard"}))
        return self._client

    def read(self, key: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self.client.get_object(Bucket=self.bucket_name, Key=self._key(key))
            return answer["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._fail("reading", key, error) from None
        except BotoCoreError as error:
            raise self._fail("reading", key, error) from None

    def write(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket_name, Key=self._key(key), Body=data)
        except (BotoCoreError, ClientError) as error:
            raise self._fail("writing", key, error) from None

    def list(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        strip = len(self._key(""))
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket_name, Prefix=self._key(prefix))
            return [item["Key"][strip:] for page in pages for item in page.get("Contents", [])]
        except (BotoCoreError, ClientError) as error:
            raise self._fail("listing", prefix, error) from None


class GCSStore(_BucketStore):
    scheme = "gs"
    hint = "check the bucket, the credentials and STORAGE_EMULATOR_HOST"
    _bucket = None

    @property
    def bucket(self):
        if self._bucket is None:
            from google.cloud import storage  # lazy: the CLI starts without it

            self._bucket = storage.Client().bucket(self.bucket_name)
        return self._bucket

    def read(self, key: str) -> bytes | None:
        from google.api_core import exceptions

        try:
            return self.bucket.blob(self._key(key)).download_as_bytes()
        except exceptions.NotFound:
            return None
        except exceptions.GoogleAPIError as error:
            raise self._fail("reading", key, error) from None

    def write(self, key: str, data: bytes) -> None:
        from google.api_core import exceptions

        try:
            self.bucket.blob(self._key(key)).upload_from_string(data)
        except exceptions.GoogleAPIError as error:
            raise self._fail("writing", key, error) from None

    def list(self, prefix: str) -> list[str]:
        from google.api_core import exceptions

        strip = len(self._key(""))
        try:
            return [blob.name[strip:] for blob in
                    self.bucket.client.list_blobs(self.bucket_name, prefix=self._key(prefix))]
        except exceptions.GoogleAPIError as error:
            raise self._fail("listing", prefix, error) from None


def open_store(uri: str, base_dir: Path) -> CheckpointStore:
    """The store ``uri`` names; a relative ``file://`` path is relative to ``base_dir``."""
    scheme, sep, rest = uri.partition("://")
    if not sep or not rest:
        raise _bad_uri(uri, "expected <scheme>://<location>")
    if scheme == "file":
        return FileStore((base_dir / rest).resolve())
    if scheme in ("s3", "gs"):
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise _bad_uri(uri, f"expected {scheme}://<bucket>/<prefix>")
        return S3Store(bucket, prefix) if scheme == "s3" else GCSStore(bucket, prefix)
    if scheme == "custom":
        return _custom_store(uri, rest)
    raise _bad_uri(uri, f"unknown scheme {scheme!r}")


def _custom_store(uri: str, rest: str) -> CheckpointStore:
    target, _, path = rest.partition("/")
    module_name, _, class_name = target.rpartition(".")
    if not module_name:
        raise _bad_uri(uri, "expected custom://package.module.Class/path")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise CheckpointError(
            f"checkpoint store {uri}: cannot load {target}: {error}",
            hint="the module must be importable (installed, or on PYTHONPATH)") from None
    if not (isinstance(cls, type) and issubclass(cls, CheckpointStore)):
        raise CheckpointError(
            f"checkpoint store {uri}: {target} is not a subclass of "
            "provisioner.checkpoint.CheckpointStore")
    store = cls(path)
    store.uri = store.uri or uri
    return store


def _bad_uri(uri: str, expected: str) -> CheckpointError:
    return CheckpointError(
        f"invalid checkpoint store URI {uri!r}: {expected}",
        hint="use file://path, s3://bucket/prefix, gs://bucket/prefix or "
             "custom://package.module.Class/path")
