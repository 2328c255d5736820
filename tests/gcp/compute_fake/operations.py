"""Operations: every mutating call returns one; its effect is applied when it turns DONE.

An operation starts RUNNING and reports DONE on the ``polls_before_done``-th get or wait of it
(0: DONE at once). An asynchronous failure ends it DONE with ``error.errors[]`` and
``httpErrorStatusCode``/``httpErrorMessage``, which is what ``ExtendedOperation.result()``
turns into an exception (it needs both fields, see google/api_core/extended_operation.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from . import errors
from .errors import ApiError
from .links import API, new_id, now, operation_name, scope_link

USER = "compute-fake@test.iam.gserviceaccount.com"


@dataclass
class Operation:
    body: dict
    scope: str
    polls_left: int
    effect: Callable[[], None] | None = None
    undo: Callable[[], None] | None = None        # what a failed operation leaves undone
    failure: tuple[str, str] | None = None        # (code, message) to end with
    done_hooks: list[Callable[[], None]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.body["status"] == "DONE"


class Operations:
    """All operations of one project, by scope and name, and the requestIds already seen."""

    def __init__(self, project: str):
        self.project = project
        self.by_key: dict[tuple[str, str], Operation] = {}
        self.by_request_id: dict[str, Operation] = {}

    def start(self, *, scope: str, op_type: str, target_link: str, target_id: str,
              polls: int, effect=None, undo=None, failure=None,
              request_id: str | None = None) -> Operation:
        name = operation_name()
        stamp = now()
        body = {"kind": "compute#operation", "id": new_id(), "name": name,
                "operationType": op_type, "targetLink": target_link, "targetId": target_id,
                "status": "RUNNING", "user": USER, "progress": 0, "insertTime": stamp,
                "startTime": stamp,
                "selfLink": f"{API}projects/{self.project}/{scope}/operations/{name}"}
        if scope.startswith("zones/"):
            body["zone"] = scope_link(self.project, scope)
        elif scope.startswith("regions/"):
            body["region"] = scope_link(self.project, scope)
        op = Operation(body, scope, polls, effect, undo, failure)
        self.by_key[(scope, name)] = op
        if request_id:
            self.by_request_id[request_id] = op
        if polls <= 0:
            self.complete(op)
        return op

    def find(self, scope: str, name: str) -> Operation:
        op = self.by_key.get((scope, name))
        if op is None:
            raise errors.not_found(f"projects/{self.project}/{scope}/operations/{name}")
        return op

    def poll(self, scope: str, name: str) -> dict:
        """A get or wait: counts towards DONE."""
        op = self.find(scope, name)
        if not op.done:
            op.polls_left -= 1
            if op.polls_left <= 0:
                self.complete(op)
        return op.body

    def delete(self, scope: str, name: str) -> None:
        op = self.find(scope, name)
        del self.by_key[(scope, op.body["name"])]

    def in_scope(self, scope: str) -> list[dict]:
        return [op.body for (where, _), op in self.by_key.items() if where == scope]

    def finish_all(self) -> None:
        for op in list(self.by_key.values()):
            if not op.done:
                self.complete(op)

    def complete(self, op: Operation) -> None:
        failure = op.failure
        if failure is None and op.effect is not None:
            try:
                op.effect()
            except ApiError as error:
                failure = (errors.OPERATION_CODES.get(error.reason, error.reason.upper()),
                           error.message)
        if failure is not None:
            if op.undo is not None:
                op.undo()
            code, message = failure
            status, text = errors.OPERATION_HTTP_ERRORS.get(code, (400, "BAD REQUEST"))
            op.body["error"] = {"errors": [{"code": code, "message": message}]}
            op.body["httpErrorStatusCode"] = status
            op.body["httpErrorMessage"] = text
        op.body.update(status="DONE", progress=100, endTime=now())
        for hook in op.done_hooks:
            hook()
