"""What every GCP resource type shares: ownership, names, the generic insert/get/list/delete of
a Compute resource, and the run's API.

Ownership: Compute resources are named ``<module name>-<lineage's first 8 hex digits>``
(deterministic, so a retried or interrupted create finds its resource by name) and carry, in
their ``description``, a JSON marker ``{"provisioner": {cluster, lineage, address, token}}``:
every Compute resource has a description, while only some take labels. Those that do also get
the labels ``provisioner-cluster``, ``provisioner-lineage`` and ``provisioner-token``.

``list`` is one paginated list call per type and location (project + region or zone), filtered
by the lineage's name suffix, so its cost does not grow with the resources; the marker then
tells ours from look-alikes.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Mapping

from provisioner.providers.base import ListScope, LiveResource, Owner
from provisioner.providers.cloud import ApiError, CloudType, known_by_address
from provisioner.providers.gcp.api import GceApi, to_dict

GONE = frozenset({"notFound"})
IN_USE = frozenset({"resourceInUseByAnotherResource"})
MARKER = "provisioner"


def marker(owner: Owner, address: str, token: str | None) -> str:
    return json.dumps({MARKER: {"cluster": owner.cluster, "lineage": owner.lineage,
                                "address": address, "token": token}}, sort_keys=True)


def read_marker(description: str | None) -> dict[str, Any]:
    try:
        found = json.loads(description or "")
    except ValueError:
        return {}
    return found.get(MARKER) or {} if isinstance(found, dict) else {}


def owner_labels(owner: Owner, token: str | None) -> dict[str, str]:
    labels = {"provisioner-cluster": owner.cluster, "provisioner-lineage": owner.lineage}
    if token:
        labels["provisioner-token"] = token
    return labels


def base(link: Any) -> str:
    """The last part of a resource URL (its name, zone or region)."""
    return str(link or "").rstrip("/").rsplit("/", 1)[-1]


def short_link(link: Any) -> str:
    """``projects/...`` of a full or partial resource URL: what we write and compare (GCE
    answers with full URLs)."""
    text = str(link or "")
    return text[text.index("projects/"):] if "projects/" in text else text


class GceType(CloudType):
    """A Compute resource type (see provisioner.providers.base for the contract).

    Subclasses say where the resource lives (``scope``: global, region or zone), its client
    (``kind``), its message type and request field, and map between our attributes and the
    REST JSON (:meth:`body`, :meth:`attributes`). Attributes always include ``project`` and,
    for regional and zonal types, ``region`` or ``zone``."""

    kind: ClassVar[str]  # the client: compute_v1.<kind>Client
    message: ClassVar[str]  # the resource message: compute_v1.<message>
    field: ClassVar[str]  # the request field holding it: "firewall_resource"
    scope: ClassVar[str] = "global"  # global, region or zone
    labels: ClassVar[bool] = False  # whether the resource takes labels
    computed = frozenset({"id", "self_link", "gce_name"})

    @property
    def api(self) -> GceApi:
        return self.shared("gce_api", lambda: GceApi(on_retry=self.ctx.retry))

    # -- to be provided by each type -----------------------------------------------------------

    def body(self, address: str, desired: dict[str, Any]) -> dict[str, Any]:
        """The REST JSON of the resource (without name, description and labels)."""
        raise NotImplementedError

    def attributes(self, address: str, item: dict[str, Any],
                   recorded: Mapping[str, Any]) -> dict[str, Any]:
        """Our attributes (without project, location and computed ones) of a listed item;
        ``recorded`` is what the state or spec says, for what the API does not return."""
        raise NotImplementedError

    # -- the generic parts -----------------------------------------------------------------------

    def where(self, attributes: Mapping[str, Any]) -> dict[str, str]:
        where = {"project": str(attributes["project"])}
        if self.scope != "global":
            where[self.scope] = str(attributes[self.scope])
        return where

    def list(self, scope: ListScope) -> list[LiveResource]:
        known = known_by_address(scope)
        places = {tuple(sorted(self.where(k.attributes).items())) for k in scope.known
                  if k.attributes.get("project") and (self.scope == "global"
                                                      or k.attributes.get(self.scope))}
        found = []
        for place in sorted(places):
            where = dict(place)
            for item in self.api.items(self.kind, **where,
                                       filter=f'name eq ".*-{self.ctx.owner.short}"'):
                mark = read_marker(item.get("description"))
                address = str(mark.get("address") or "")
                if (mark.get("lineage") != self.ctx.owner.lineage
                        or not address.startswith(self.type_name + ".")):
                    continue
                recorded = known[address].attributes if address in known else {}
                found.append(self._live(address, item, recorded, mark.get("token"), where))
        return found

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        live = self._by_token(address, token, desired)
        if live is not None:
            return self.update(address, live, desired)
        name = self.name_of(desired)
        body = {**self.body(address, desired), "name": name,
                "description": marker(self.ctx.owner, address, token)}
        if self.labels:
            body["labels"] = {**body.get("labels", {}), **owner_labels(self.ctx.owner, token)}
        where = self.where(desired)
        try:
            self.api.mutate(self.kind, "insert", for_address=address, token=token, **where,
                            **{self.field: self.api.message(self.message, body)})
        except ApiError as error:
            if error.code != "alreadyExists":
                raise
            # An earlier attempt of this create whose answer was lost? Its marker says so.
            existing = self._get(where, name, address)
            if read_marker(existing.get("description")).get("token") != token:
                raise
        return self._live(address, self._get(where, name, address), desired, token, where)

    def delete(self, address: str, prior: LiveResource) -> None:
        where = self.where(prior.attributes)
        name = prior.attributes.get("gce_name") or base(prior.id)
        self.delete_when_free(address, "its users to let it go", lambda: self.api.mutate(
            self.kind, "delete", for_address=address, **where, **{self.kind_key(): name}),
            gone=GONE, busy=IN_USE)

    def kind_key(self) -> str:
        """The request field naming the resource (``firewall``, ``instance_group_manager``)."""
        return self.field.removesuffix("_resource")

    def _get(self, where: dict[str, str], name: str, address: str) -> dict[str, Any]:
        return to_dict(self.api.call(self.kind, "get", for_address=address, **where,
                                     **{self.kind_key(): name}))

    def _live(self, address: str, item: dict[str, Any], recorded: Mapping[str, Any],
              token: str | None, where: dict[str, str]) -> LiveResource:
        attributes = {"name": recorded.get("name", item["name"]), **where,
                      **self.attributes(address, item, recorded),
                      "id": item["selfLink"], "self_link": short_link(item["selfLink"]),
                      "gce_name": item["name"]}
        return LiveResource(address, item["selfLink"], attributes, token)

    def patch(self, address: str, prior: LiveResource, body: dict[str, Any]) -> None:
        """Patch the resource with ``body`` (and the fingerprint it has now, where it has one:
        Compute refuses a patch of a changed resource with 412)."""
        where = self.where(prior.attributes)
        name = prior.attributes.get("gce_name") or base(prior.id)
        current = self._get(where, name, address)
        if "fingerprint" in current:
            body = {**body, "fingerprint": current["fingerprint"]}
        self.api.mutate(self.kind, "patch", for_address=address, **where,
                        **{self.kind_key(): name, self.field: self.api.message(self.message,
                                                                               body)})

    def refreshed(self, address: str, prior: LiveResource, desired: dict[str, Any]
                  ) -> LiveResource:
        """The resource as it is now (after an update)."""
        where = self.where(desired)
        name = prior.attributes.get("gce_name") or base(prior.id)
        return self._live(address, self._get(where, name, address), desired, prior.token, where)
