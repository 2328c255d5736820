"""The fake's state: every resource of the project, its operations and the knobs tests turn.

A resource being inserted is stored at once (its name is taken: a second insert gets 409) but
stays invisible (get 404, left out of lists) until its operation is DONE. GCE does answer 404
for a resource whose insert is still running (googleapis/nodejs-compute#377: a get right after
an insert that later failed), though it shows some kinds earlier (an instance as PROVISIONING);
a caller that works here is one that waits for the operation, which is right against both. A
resource being deleted stays visible until its operation is DONE. While an operation on a
resource runs, another change to it is refused with 400 ``resourceNotReady``, as GCE does for
concurrent changes to load-balancing resources.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field

from . import errors, refs
from .links import Ref, new_id, now, scope_link
from .operations import Operation, Operations


@dataclass
class Resource:
    ref: Ref
    body: dict
    state: str = "creating"                 # creating | ready | deleting
    owner: str | None = None                # path of the MIG that manages it
    pending: Operation | None = None        # the operation changing it now
    extra: dict = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.ref.path

    @property
    def link(self) -> str:
        return self.ref.link

    @property
    def collection(self) -> str:
        return self.ref.collection

    @property
    def scope(self) -> str:
        return self.ref.scope


@dataclass
class Config:
    polls_before_done: int = 1          # gets/waits of an operation before it reports DONE
    mig_reads_before_stable: int = 1    # reads of a MIG before a pending instance action happens


class World:
    def __init__(self, project: str):
        self.project = project
        self.lock = threading.RLock()
        self.config = Config()
        self.resources: dict[str, Resource] = {}
        self.operations = Operations(project)
        self.failures: dict[str, list[tuple[str, str]]] = {}   # collection -> queued failures
        self.external_ips = {"global": 0, "regional": 0}

    # -- lookup -------------------------------------------------------------------------------

    def path(self, scope: str, collection: str, name: str) -> str:
        return f"projects/{self.project}/{scope}/{collection}/{name}"

    def visible(self, path: str) -> Resource | None:
        res = self.resources.get(path)
        return res if res is not None and res.state != "creating" else None

    def require(self, scope: str, collection: str, name: str) -> Resource:
        """A visible resource by name or, as the API also accepts, by numeric id."""
        path = self.path(scope, collection, name)
        res = self.visible(path)
        if res is None and name.isdigit():
            res = next((r for r in self.in_scope(scope, collection) if r.body["id"] == name),
                       None)
        if res is None:
            raise errors.not_found(path)
        return res

    def require_idle(self, scope: str, collection: str, name: str) -> Resource:
        """The resource, refused with resourceNotReady while another operation changes it."""
        res = self.require(scope, collection, name)
        if res.state != "ready" or (res.pending is not None and not res.pending.done):
            raise errors.not_ready(res.path)
        return res

    def in_scope(self, scope: str, collection: str, *, states=("ready", "deleting")) -> list:
        return [res for res in self.resources.values()
                if res.scope == scope and res.collection == collection and res.state in states]

    def of_collection(self, collection: str) -> list[Resource]:
        return [res for res in self.resources.values() if res.collection == collection]

    def referrers(self, path: str) -> list[Resource]:
        """Every resource (in any state) whose references point at ``path``."""
        found = []
        for res in self.resources.values():
            if res.path != path and any(ref.path == path for _, ref in
                                        refs.targets(res.collection, res.body, self.project)):
                found.append(res)
        return found

    # -- changes --------------------------------------------------------------------------------

    def new_resource(self, scope: str, collection: str, name: str, body: dict,
                     kind: str) -> Resource:
        ref = Ref(self.project, scope, collection, name)
        body.update(kind=kind, name=name, id=new_id(), creationTimestamp=now(),
                    selfLink=ref.link)
        if scope.startswith("zones/"):
            body["zone"] = scope_link(self.project, scope)
        elif scope.startswith("regions/"):
            body["region"] = scope_link(self.project, scope)
        return Resource(ref, body)

    def add(self, res: Resource) -> None:
        if res.path in self.resources:
            raise errors.already_exists(res.path)
        self.resources[res.path] = res

    def drop(self, res: Resource) -> None:
        if self.resources.get(res.path) is res:
            del self.resources[res.path]

    def take_failure(self, collection: str) -> tuple[str, str] | None:
        queue = self.failures.get(collection)
        return queue.pop(0) if queue else None

    def operate(self, res: Resource, op_type: str, effect, *, request_id: str | None,
                undo=None, failure=None) -> dict:
        """Start the operation that applies ``effect`` to ``res`` when it is DONE."""
        op = self.operations.start(scope=res.scope, op_type=op_type, target_link=res.link,
                                   target_id=res.body["id"],
                                   polls=self.config.polls_before_done, effect=effect,
                                   undo=undo, failure=failure, request_id=request_id)
        if not op.done:
            res.pending = op
            op.done_hooks.append(lambda: setattr(res, "pending", None))
        return copy.deepcopy(op.body)
