"""``recover``: what it decides before the ordinary plan/apply engine rebuilds the head.

Ray cannot survive losing its head: the GCS (and with it every Serve application) is gone, and
the workers' raylets leave about 60 s later. Recover:

1. probes the head (:func:`probe_head`): machine reachable, GCS and dashboard answering;
2. picks where the new head runs (:func:`place_head`): the same machine if it answers again,
   else the first standby host of the spec that answers;
3. says what is known to be gone (:func:`lost_and_held`): every Serve application, and the
   resources of a machine that does not answer (held as recorded: nothing can be done there);
4. then the caller plans with the head tainted and the placement recorded, applies with the same
   engine as ``apply`` (the head is created, workers get the new head record, the load balancer
   its new backend, the apps are deployed from the checkpoint), and checks every route through
   the load balancer (:func:`verify_routes`).

Nothing here writes infrastructure; it returns data for the caller and the engine.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from provisioner.errors import ProviderError, ProvisionerError
from provisioner.providers.base import LiveResource
from state.document import StateDocument

APP_TYPE = "serve_app"
HOST_TYPE = "ssh_host"
VERIFY_TIMEOUT_S = 180.0


class RecoverError(ProvisionerError):
    """Recover cannot go on (no head recorded, no host for a new head, routes never answered)."""


@dataclass(frozen=True)
class HeadProbe:
    address: str  # the head's resource address
    lost: str | None  # why the head is lost; None when it is healthy

    @property
    def healthy(self) -> bool:
        return self.lost is None


@dataclass(frozen=True)
class HeadPlacement:
    host: str | None  # the host the head runs on from now (None: the provider has no hosts)
    moved: bool  # a standby host takes over
    generation: int  # heads replaced by recover so far, this one included
    unreachable: frozenset[str] = frozenset()  # candidate hosts that did not answer

    def record(self, spec_head: str | None) -> dict[str, Any]:
        """What the state keeps (``history.placement``) for the module to expand."""
        return {"head": self.host if self.host != spec_head else None,
                "generation": self.generation}


def probe_head(document: StateDocument, providers) -> HeadProbe:
    """The head's health, as its resource type sees it."""
    for address, record in sorted(document.resources.items()):
        provider = providers.get(record.type)
        if provider.is_head(record.attributes):
            live = LiveResource(address, record.id, dict(record.attributes), record.token)
            return HeadProbe(address, provider.head_health(live))
    raise RecoverError("the state records no Ray head: nothing to recover",
                       hint="run apply to create the cluster")


def host_of(document: StateDocument, address: str) -> str | None:
    """The ssh_host name a resource runs on (its connection names it), if any."""
    attributes = document.resources[address].attributes
    for value in attributes.values():
        if isinstance(value, dict) and str(value.get("host_resource", "")).startswith(
                f"{HOST_TYPE}."):
            return value["host_resource"].split(".", 1)[1]
    return None


def reachable(document: StateDocument, host: str) -> bool:
    """Whether ``host`` (an ssh_host recorded in the state) answers on SSH with its recorded
    key, within a few seconds."""
    from provisioner.remote.connect import quick, runner_for

    record = document.resources.get(f"{HOST_TYPE}.{host}")
    if record is None or not record.attributes.get("connection"):
        return False
    try:
        runner_for(quick(record.attributes["connection"]), f"{HOST_TYPE}.{host}").run(
            "true", timeout=10)
    except ProviderError:
        return False
    return True


def place_head(document: StateDocument, cluster, probe: HeadProbe) -> HeadPlacement:
    """Where the new head runs: the lost head's machine if it answers, else the first
    answering candidate of the spec (its head, then its standby hosts, in order)."""
    placement = document.history.get("placement") or {}
    generation = int(placement.get("generation") or 0) + 1
    current = host_of(document, probe.address)
    if current is None:  # not a machine we reach over SSH (local): the head stays where it is
        return HeadPlacement(None, False, generation)
    candidates = [current] + [h for h in [cluster.head, *cluster.standby] if h != current]
    with ThreadPoolExecutor(max_workers=len(candidates)) as pool:
        answers = dict(zip(candidates, pool.map(lambda h: reachable(document, h), candidates)))
    unreachable = frozenset(host for host, answered in answers.items() if not answered)
    for host in candidates:
        if answers[host]:
            return HeadPlacement(host, host != current, generation, unreachable)
    raise RecoverError(
        f"no host can take the head: {', '.join(candidates)} do not answer on SSH",
        hint="bring one of them back (or add a standby host to the spec), then recover again")


def lost_and_held(document: StateDocument, probe: HeadProbe,
                  placement: HeadPlacement) -> tuple[frozenset[str], frozenset[str]]:
    """(lost, held). Lost: known gone, not looked for by refresh: every Serve application
    (their state lived in the lost head's GCS) and everything on a machine that does not answer
    (the old head's, when the head moves; a dead standby). Held: the resources of those
    machines: what the spec still wants there (an ssh_host, now a standby) is left as recorded,
    what it no longer wants (the old head's ray_node) is removed from the state without calling
    the machine."""
    lost = {a for a, r in document.resources.items() if r.type == APP_TYPE}
    held = {address for address, record in document.resources.items()
            # (apps only reach the old head through it: they are lost, and made again)
            if record.type != APP_TYPE and host_of(document, address) in placement.unreachable}
    return frozenset(lost | held), frozenset(held)


def app_routes(document: StateDocument) -> dict[str, str]:
    """app name -> route prefix, of the apps the state records (after recover's apply)."""
    routes = {}
    for record in document.resources.values():
        if record.type == APP_TYPE and record.attributes.get("route_prefix"):
            routes[record.attributes["name"]] = record.attributes["route_prefix"]
    return routes


def verify_routes(base_url: str, routes: dict[str, str], progress: Callable[[str], None],
                  timeout_s: float = VERIFY_TIMEOUT_S) -> dict[str, int]:
    """Wait until every route answers through ``base_url`` (the load balancer): Serve's route
    table (``/-/routes``) lists it and a request to it gets a status below 500 (the app's own
    404 for a prefix it does not serve at its root still proves the app answers). Returns
    route -> status."""
    deadline = time.monotonic() + timeout_s
    statuses: dict[str, int] = {}
    waiting_for = ""
    while True:
        try:
            table = json.loads(_get(f"{base_url}/-/routes")[1] or "{}")
        except ValueError:
            table = {}
        missing = [route for route in routes.values() if route not in table]
        if not missing:
            statuses = {route: _get(base_url + route)[0] for route in sorted(routes.values())}
            failing = [r for r, status in statuses.items() if status >= 500 or status == 0]
            if not failing:
                return statuses
            waiting_for = ", ".join(f"{r} ({statuses[r] or 'no answer'})" for r in failing)
        else:
            waiting_for = "routes " + ", ".join(missing)
        if time.monotonic() > deadline:
            raise RecoverError(f"the applications were deployed but {waiting_for} did not "
                               f"answer through {base_url} within {timeout_s:.0f}s",
                               hint="see `provisioner status`; run recover again to retry")
        progress(f"waiting for {waiting_for}")
        time.sleep(0.5)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, ""
    except (OSError, ValueError):
        return 0, ""
