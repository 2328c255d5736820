"""A local fake of the Google Compute Engine REST API (v1), for tests.

GCE has no emulator. This fake serves the REST paths the real ``google-cloud-compute`` clients
call, with GCE's JSON field names, URL shapes, operations and error bodies, so that a test
passing against it makes the same calls that are right against Compute Engine.

Use::

    with compute_fake() as fake:                      # project "test-project"
        instances = fake.client(compute_v1.InstancesClient)
        op = instances.insert(project=fake.project, zone="us-central1-a",
                              instance_resource=...)
        op.result()                                   # polls the fake, never compute.googleapis.com

How a caller must construct clients (the GCP provider does the same; ``clients.make_client``):

1. ``client_options={"api_endpoint": "http://127.0.0.1:<port>"}`` -- the endpoint with its
   ``http://`` scheme; a bare ``host:port`` makes the REST transport use https.
2. Credentials given explicitly (tests: ``google.auth.credentials.AnonymousCredentials()``), so
   nothing looks for application default credentials or a metadata server.
3. Seed the transport's operations clients: ``ExtendedOperation.result()`` polls through
   ``client._transport._{global,region,zone}_operations_client``, which the library builds
   WITHOUT the client_options, i.e. against https://compute.googleapis.com (checked in
   google-cloud-compute 1.57 ``services/*/transports/base.py``). Put operations clients built
   with the same options and credentials into ``client._transport._extended_operations_services``
   under ``"global_operations"``, ``"region_operations"`` and ``"zone_operations"`` before the
   first ``result()``/``done()``, and check with ``clients.check_polling_endpoint``. (The
   public-API-only alternative: never call ``result()``; poll with your own
   ``ZoneOperationsClient(client_options=...).wait(...)``.)

What it serves (under ``/compute/v1/projects/{project}/``): instances (setLabels),
instanceTemplates, instanceGroupManagers and regionInstanceGroupManagers (resize, patch,
listManagedInstances), instanceGroups (setNamedPorts, listInstances; addInstances and
removeInstances on unmanaged zonal groups; regional groups come only from MIGs),
healthChecks and regionHealthChecks (patch, update), backendServices and regionBackendServices
(patch, update), urlMaps (patch, update), targetHttpProxies (patch, setUrlMap),
globalForwardingRules and forwardingRules (patch, setTarget, setLabels), addresses and
globalAddresses (setLabels), firewalls (patch, update), networks, subnetworks, and the
globalOperations / regionOperations / zoneOperations services (get, wait, list, delete). Every
resource has insert / get / list (filter, orderBy, maxResults, pageToken) / delete. A ``default``
network with a subnetwork in each known region and GCE's four default firewall rules exist from
the start. External addresses (ephemeral or reserved) come from the documentation ranges
203.0.113.0/24 (global) and 198.51.100.0/24 (regional), so nothing ever reaches a real host.
Anything else answers 501 ``notImplemented`` so a test never passes by accident.

Behaviour, module by module: operations and asynchronous failures (``operations``), what is
visible while an operation runs (``world``), filters and pages (``listing``), references and
their checks (``refs``), MIG semantics (``groups``), unmanaged instance groups (``unmanaged``),
addresses and IP allocation (``network``), load-balancing rules (``balancing``), error bodies
(``errors``). Every answer is checked against the library's protobuf schema (no unknown fields)
before it is sent.
"""

from .server import FakeCompute, compute_fake

__all__ = ["FakeCompute", "compute_fake"]
