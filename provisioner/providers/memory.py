"""``memory_resource``: resources that live as small JSON files beside the state.

For trying the engine and pipelines without infrastructure, for the engine's own tests (failures
with ``fail``, slow calls with ``delay_s``) and for benchmarks of planning at scale. Implements
:class:`provisioner.providers.base.ResourceType` (see there for the contract).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from provisioner.errors import ProviderError
from provisioner.providers.base import ListScope, LiveResource, ResourceType


class MemoryResource(ResourceType):
    type_name = "memory_resource"
    force_new = frozenset({"index"})
    computed = frozenset({"id"})

    def _dir(self) -> Path:
        path = self.ctx.data_dir / "memory" / self.ctx.owner.lineage
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def _file(self, address: str) -> Path:
        return self._dir() / (hashlib.sha256(address.encode()).hexdigest()[:32] + ".json")

    def list(self, scope: ListScope) -> list[LiveResource]:
        found = []
        for path in self._dir().glob("*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a write interrupted before its rename leaves no .json file
            found.append(LiveResource(**data))
        return found

    def create(self, address: str, desired: dict[str, Any], token: str) -> LiveResource:
        existing = self._read(address)
        if existing and existing.token == token:
            return existing
        self._act(address, desired, "create")
        live = LiveResource(address, f"mem-{uuid.uuid4().hex[:12]}", {}, token)
        return self._write(live, desired)

    def update(self, address: str, prior: LiveResource, desired: dict[str, Any]) -> LiveResource:
        self._act(address, desired, "update")
        return self._write(LiveResource(address, prior.id, {}, prior.token), desired)

    def delete(self, address: str, prior: LiveResource) -> None:
        time.sleep(float(prior.attributes.get("delay_s") or 0))
        self._file(address).unlink(missing_ok=True)

    def _act(self, address: str, desired: dict[str, Any], verb: str) -> None:
        delay = float(desired.get("delay_s") or 0)
        if delay:
            self.ctx.progress(address, f"{verb}: waiting {delay:g}s")
            time.sleep(delay)
        if desired.get("fail"):
            raise ProviderError(f"{verb} failed: {desired['fail']}", address=address)

    def _read(self, address: str) -> LiveResource | None:
        try:
            return LiveResource(**json.loads(self._file(address).read_text()))
        except (OSError, ValueError):
            return None

    def _write(self, live: LiveResource, desired: dict[str, Any]) -> LiveResource:
        live.attributes = {**desired, "id": live.id}
        path = self._file(live.address)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(live.__dict__, sort_keys=True))
        os.replace(tmp, path)
        return live
