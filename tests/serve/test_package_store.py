"""Serve code through a package store (cloud clusters): packed here, put once into S3 (moto in
server mode, through the fault proxy that counts the writes), and named to Serve by its S3 URI;
the URI reads back as the same package name, so a deployed app shows no change."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from provisioner.errors import ServeError
from provisioner.providers.base import Owner, ProviderContext
from provisioner.serve import readers
from provisioner.serve.package import package_name_of
from provisioner.providers.serve_app import ServeApp, app_config
from tests.aws.faultproxy import FaultProxy
from tests.checkpoint.servers import moto_s3

BUCKET = "packages-test"
CODE = Path(__file__).resolve().parents[2] / "examples" / "quickstart" / "app"


@pytest.fixture(scope="module")
def s3() -> Iterator[FaultProxy]:
    with moto_s3(BUCKET) as env, FaultProxy(env["AWS_ENDPOINT_URL"]) as proxy:
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update({**env, "AWS_ENDPOINT_URL": proxy.url})
        try:
            yield proxy
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def desired(store: str) -> dict:
    return {"name": "hello", "import_path": "hello:app", "route_prefix": "/hello",
            "runtime_env": {"working_dir": package_name_of(CODE)},
            "package_source": str(CODE), "package_sync": "store", "package_store": store,
            "package_dir": None, "deployments": {}, "extra": {}}


def test_a_package_goes_to_the_store_once_and_serve_gets_its_uri(s3: FaultProxy,
                                                                 tmp_path: Path) -> None:
    store = f"s3://{BUCKET}/team/cluster"
    app = ServeApp(ProviderContext(Owner("c", "lineage"), tmp_path, tmp_path))
    wanted = desired(store)
    name = wanted["runtime_env"]["working_dir"]

    s3.reset()
    app._ensure_package("serve_app.hello", wanted)
    app._ensure_package("serve_app.hello", wanted)
    assert s3.count(service="s3", operation=f"PUT /{BUCKET}/team/cluster/packages/{name}") == 1

    import boto3

    body = boto3.client("s3", region_name="us-east-1").get_object(
        Bucket=BUCKET, Key=f"team/cluster/packages/{name}")["Body"].read()
    assert body == (tmp_path / "packages" / name).read_bytes()

    config = app_config(wanted)
    uri = f"{store}/packages/{name}"
    assert config["runtime_env"]["working_dir"] == uri
    # What Serve reports back maps to the attributes the plan compares: no phantom change.
    assert readers.app_attributes(config)["runtime_env"]["working_dir"] == name


def test_a_package_nobody_can_build_is_a_clear_error(s3: FaultProxy, tmp_path: Path) -> None:
    app = ServeApp(ProviderContext(Owner("c", "lineage"), tmp_path, tmp_path))
    wanted = desired(f"s3://{BUCKET}/other")
    wanted["package_source"] = None
    wanted["runtime_env"]["working_dir"] = "pkg_" + "0" * 64 + ".zip"
    with pytest.raises(ServeError, match="neither in s3://"):
        app._ensure_package("serve_app.hello", wanted)
