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

from typing import Any, ClassVar, Iterable, Mapping

from provisioner.providers.aws.api import AwsApi
from provisioner.providers.base import Owner
from provisioner.providers.cloud import CloudType

TAG_CLUSTER = "provisioner:cluster"
TAG_LINEAGE = "provisioner:lineage"
TAG_ADDRESS = "provisioner:address"
TAG_TOKEN = "provisioner:token"


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


class AwsType(CloudType):
    """Base of the AWS resource types (see provisioner.providers.base for the contract)."""

    service: ClassVar[str]
    name_limit = 32  # load balancers and target groups; others pass their own limit

    @property
    def api(self) -> AwsApi:
        return self.shared("aws_api", lambda: AwsApi(on_retry=self.ctx.retry))

    def call(self, region: str, operation: str, *, address: str | None = None,
             **params: Any) -> dict[str, Any]:
        return self.api.call(self.service, region, operation, address=address, **params)

    def pages(self, region: str, operation: str, key: str, **params: Any) -> list[Any]:
        return self.api.pages(self.service, region, operation, key, **params)

    def tags(self, address: str, token: str | None) -> dict[str, str]:
        return owner_tags(self.ctx.owner, address, token)

    def owns(self, tags: Mapping[str, str]) -> bool:
        return (tags.get(TAG_LINEAGE) == self.ctx.owner.lineage
                and tags.get(TAG_ADDRESS, "").startswith(self.type_name + "."))
