"""What every AWS resource type shares: the run's API, ownership tags, names and waiting.

Ownership: every resource carries the tags ``provisioner:cluster``, ``provisioner:lineage``
(the state's), ``provisioner:address`` and ``provisioner:token`` (the idempotency token of the
create that made it), set in the create call itself (``TagSpecifications``/``Tags``), so a
resource never exists untagged. ``list`` finds resources by the lineage tag; an interrupted
create is found by its token and adopted.

Names: AWS names must be unique per account and region (security groups per VPC), so the name
the module asks for gets the state lineage's first 8 hex digits appended (``aws_name``): two
states of the same cluster name never collide, and the name still says whose it is.
"""

from __future__ import annotations

import time
from typing import Any, Callable, ClassVar, Iterable, Mapping, TypeVar

from provisioner.errors import ProviderError
from provisioner.providers.aws.api import AwsApi, AwsError
from provisioner.providers.base import (
    KnownResource,
    ListScope,
    LiveResource,
    Owner,
    ResourceType,
)

TAG_CLUSTER = "provisioner:cluster"
TAG_LINEAGE = "provisioner:lineage"
TAG_ADDRESS = "provisioner:address"
TAG_TOKEN = "provisioner:token"

T = TypeVar("T")


def owner_tags(owner: Owner, address: str, token: str | None) -> dict[str, str]:
    tags = {TAG_CLUSTER: owner.cluster, TAG_LINEAGE: owner.lineage, TAG_ADDRESS: address,
            "Name": f"{owner.cluster}/{address}"}
    if token:
        tags[TAG_TOKEN] = token
    return tags


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def tag_dict(tags: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(tag["Key"]): str(tag.get("Value", "")) for tag in tags or ()}


def lineage_filter(owner: Owner) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{TAG_LINEAGE}", "Values": [owner.lineage]}]


def aws_name(owner: Owner, name: str, limit: int = 32) -> str:
    """``name`` with the lineage's short form appended, within AWS's length ``limit``."""
    suffix = "-" + owner.short
    return name[: limit - len(suffix)].rstrip("-") + suffix


def regions(scope: ListScope) -> list[str]:
    """The regions the known resources are in: where ``list`` looks."""
    return sorted({str(k.attributes["region"]) for k in scope.known
                   if k.attributes.get("region")})


def known_by_address(scope: ListScope) -> dict[str, KnownResource]:
    return {k.address: k for k in scope.known}


class AwsType(ResourceType):
    """Base of the AWS resource types (see provisioner.providers.base for the contract)."""

    service: ClassVar[str]

    @property
    def api(self) -> AwsApi:
        shared = self.ctx.shared
        if "aws_api" not in shared:
            shared.setdefault("aws_api", AwsApi(on_retry=self.ctx.retry))
        return shared["aws_api"]

    def call(self, region: str, operation: str, *, address: str | None = None,
             **params: Any) -> dict[str, Any]:
        return self.api.call(self.service, region, operation, address=address, **params)

    def pages(self, region: str, operation: str, key: str, **params: Any) -> list[Any]:
        return self.api.pages(self.service, region, operation, key, **params)

    def _by_token(self, address: str, token: str, desired: dict[str, Any]) -> LiveResource | None:
        """What an earlier attempt of this create made, if it got through (found by its
        token tag, so also where the API takes no client token or ignores it)."""
        scope = ListScope(self.ctx.owner, [KnownResource(address, desired)])
        return next((live for live in self.list(scope) if live.token == token), None)

    def tags(self, address: str, token: str | None) -> dict[str, str]:
        return owner_tags(self.ctx.owner, address, token)

    def owns(self, tags: Mapping[str, str]) -> bool:
        return (tags.get(TAG_LINEAGE) == self.ctx.owner.lineage
                and tags.get(TAG_ADDRESS, "").startswith(self.type_name + "."))

    def name_of(self, desired: Mapping[str, Any], limit: int = 32) -> str:
        return aws_name(self.ctx.owner, str(desired["name"]), limit)

    def wait_for(self, address: str, what: str, check: Callable[[], T | None], *,
                 timeout_s: float = 600.0, interval_s: float = 2.0) -> T:
        """Poll ``check`` until it returns something other than None."""
        deadline = time.monotonic() + timeout_s
        reported = 0.0
        while True:
            result = check()
            if result is not None:
                return result
            now = time.monotonic()
            if now > deadline:
                raise ProviderError(f"timed out after {timeout_s:.0f}s waiting for {what}",
                                    address=address)
            if now - reported > 10:
                self.ctx.progress(address, f"waiting for {what}")
                reported = now
            time.sleep(interval_s)


def ignore_codes(codes: set[str] | frozenset[str], action: Callable[[], T]) -> T | None:
    """Run ``action``; None when AWS answers with one of ``codes`` (already gone, already
    there)."""
    try:
        return action()
    except AwsError as error:
        if error.code in codes:
            return None
        raise
