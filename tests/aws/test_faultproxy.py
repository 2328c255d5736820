"""The fault proxy against a real moto server, driven by real boto3 clients."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.aws.faultproxy import Call, FaultProxy
from tests.checkpoint.servers import moto_server
from tests.support import free_ports


@pytest.fixture(scope="module")
def moto() -> Iterator[dict[str, str]]:
    with moto_server() as env:
        yield env


@pytest.fixture
def proxy(moto: dict[str, str]) -> Iterator[FaultProxy]:
    with FaultProxy(moto["AWS_ENDPOINT_URL"]) as running:
        yield running


def client(proxy: FaultProxy, service: str, **retries: Any) -> Any:
    """A boto3 client through the proxy; by default it makes one attempt (botocore's
    ``max_attempts`` counts retries, ``total_max_attempts`` counts the first attempt too)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client(service, endpoint_url=proxy.url,
             config=Config(retries=retries or {"total_max_attempts": 1}))


def bucket(proxy: FaultProxy) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    client(proxy, "s3").create_bucket(Bucket=name)
    return name


def test_counts_calls_by_service_and_operation(proxy: FaultProxy) -> None:
    client(proxy, "ec2").describe_vpcs()
    client(proxy, "ec2").describe_vpcs()
    client(proxy, "autoscaling").describe_auto_scaling_groups()
    client(proxy, "elbv2").describe_load_balancers()
    client(proxy, "ssm").describe_parameters()
    name = bucket(proxy)
    client(proxy, "s3").put_object(Bucket=name, Key="dir/k.json", Body=b"{}")

    assert proxy.count("ec2", "DescribeVpcs") == 2
    assert proxy.count("ec2") == 2
    assert proxy.count("autoscaling", "DescribeAutoScalingGroups") == 1
    assert proxy.count("elasticloadbalancing", "DescribeLoadBalancers") == 1
    assert proxy.count("ssm", "DescribeParameters") == 1
    assert proxy.count("s3", f"PUT /{name}/dir/k.json") == 1
    assert proxy.count(operation="DescribeVpcs") == 2
    assert proxy.count() == 7
    assert proxy.calls[0] == Call("ec2", "DescribeVpcs", "POST", "/", 200)
    assert proxy.calls[-1] == Call("s3", f"PUT /{name}/dir/k.json", "PUT",
                                   f"/{name}/dir/k.json", 200)
    assert proxy.injected == 0

    proxy.reset()
    assert proxy.calls == [] and proxy.count() == 0


@pytest.mark.parametrize(
    ("service", "call", "status", "code", "expected"),
    [
        ("ec2", lambda c: c.describe_vpcs(), 400, None, "RequestLimitExceeded"),
        ("ec2", lambda c: c.describe_vpcs(), 503, None, "Unavailable"),
        ("autoscaling", lambda c: c.describe_auto_scaling_groups(), 400, None, "Throttling"),
        ("elbv2", lambda c: c.describe_load_balancers(), 429, None, "Throttling"),
        ("elbv2", lambda c: c.describe_load_balancers(), 503, None, "ServiceUnavailable"),
        ("ssm", lambda c: c.describe_parameters(), 400, "ThrottlingException",
         "ThrottlingException"),
        ("s3", lambda c: c.list_buckets(), 503, "SlowDown", "SlowDown"),
        ("s3", lambda c: c.list_buckets(), 500, None, "InternalError"),
    ],
)
def test_injected_error_is_the_code_botocore_sees(
    proxy: FaultProxy, service: str, call: Any, status: int, code: str | None, expected: str
) -> None:
    from botocore.exceptions import ClientError

    api = client(proxy, service)
    proxy.inject(status=status, code=code)
    with pytest.raises(ClientError) as raised:
        call(api)
    assert raised.value.response["Error"]["Code"] == expected
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert proxy.injected == 1
    assert proxy.calls[-1].status == status
    call(api)  # `times` was 1: the next one is forwarded
    assert proxy.injected == 1 and proxy.calls[-1].status == 200


def test_inject_matches_service_and_operation_only(proxy: FaultProxy) -> None:
    from botocore.exceptions import ClientError

    ec2 = client(proxy, "ec2")
    proxy.inject(service="ec2", operation="DescribeSubnets", status=400, times=2)
    ec2.describe_vpcs()
    client(proxy, "autoscaling").describe_auto_scaling_groups()
    for _ in range(2):
        with pytest.raises(ClientError):
            ec2.describe_subnets()
    ec2.describe_subnets()
    assert proxy.injected == 2
    assert [c.status for c in proxy.calls] == [200, 200, 400, 400, 200]


def test_standard_retry_mode_recovers_from_throttling(proxy: FaultProxy) -> None:
    name = bucket(proxy)
    proxy.inject(service="ec2", operation="DescribeVpcs", status=400)
    proxy.inject(service="s3", status=503, code="SlowDown")
    vpcs = client(proxy, "ec2", mode="standard", max_attempts=3).describe_vpcs()
    assert vpcs["ResponseMetadata"]["RetryAttempts"] == 1
    s3 = client(proxy, "s3", mode="standard", max_attempts=3)
    put = s3.put_object(Bucket=name, Key="k", Body=b"x")
    assert put["ResponseMetadata"]["RetryAttempts"] == 1
    assert proxy.injected == 2
    assert proxy.count("ec2", "DescribeVpcs") == 2
    assert proxy.count("s3", f"PUT /{name}/k") == 2
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"x"


def test_bodies_and_framing_pass_unchanged(proxy: FaultProxy) -> None:
    from botocore.exceptions import ClientError

    name = bucket(proxy)
    s3 = client(proxy, "s3")
    data = os.urandom(3 * 1024 * 1024 + 17)
    put = s3.put_object(Bucket=name, Key="big", Body=data)
    assert put["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    assert s3.get_object(Bucket=name, Key="big")["Body"].read() == data
    assert s3.head_object(Bucket=name, Key="big")["ContentLength"] == len(data)
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=name, Key="absent")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    listed = s3.list_objects_v2(Bucket=name)
    assert [o["Key"] for o in listed["Contents"]] == ["big"]
    assert proxy.count("s3", f"GET /{name}/big") == 1
    assert proxy.count("s3", f"HEAD /{name}/big") == 1


def test_stripped_conditional_headers_make_conditional_writes_pass(proxy: FaultProxy) -> None:
    from botocore.exceptions import ClientError

    name = bucket(proxy)
    s3 = client(proxy, "s3")
    s3.put_object(Bucket=name, Key="k", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=name, Key="k", Body=b"2", IfNoneMatch="*")
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(ClientError):
        s3.put_object(Bucket=name, Key="k", Body=b"2", IfMatch='"0123456789abcdef"')

    proxy.strip_request_headers("If-Match", "If-None-Match")
    s3.put_object(Bucket=name, Key="k", Body=b"2", IfNoneMatch="*")
    s3.put_object(Bucket=name, Key="k", Body=b"3", IfMatch='"0123456789abcdef"')
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"3"
    assert [c.status for c in proxy.calls[-3:-1]] == [200, 200]

    proxy.reset()  # rules go too: conditions are enforced again
    with pytest.raises(ClientError):
        s3.put_object(Bucket=name, Key="k", Body=b"4", IfNoneMatch="*")


def test_unreachable_upstream_is_a_502() -> None:
    with FaultProxy(f"http://127.0.0.1:{free_ports(1)[0]}") as proxy:
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(proxy.url + "/x", timeout=10)
        assert raised.value.code == 502
        assert proxy.calls == [Call("", "GET /x", "GET", "/x", 502)]


def test_concurrent_clients_are_all_counted(proxy: FaultProxy) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ec2 = client(proxy, "ec2")  # botocore clients are thread safe; its pool keeps connections
    proxy.inject(service="ec2", status=400, times=5)

    def describe(_: int) -> int:
        try:
            ec2.describe_vpcs()
            return 200
        except ec2.exceptions.ClientError:
            return 400

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(describe, range(40)))
    assert sorted(statuses) == [200] * 35 + [400] * 5
    assert proxy.count("ec2", "DescribeVpcs") == 40 and proxy.injected == 5
