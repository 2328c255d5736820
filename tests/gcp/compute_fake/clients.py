"""How to build google-cloud-compute clients that stay on a custom endpoint, polling included.

``InstancesClient(...).insert(...)`` returns an ``ExtendedOperation`` whose ``result()`` polls
through an operations client that the transport builds lazily from its credentials alone
(``transports/base.py``: ``ZoneOperationsClient(credentials=self._credentials,
transport=self.kind)``, no client_options). Against a custom ``api_endpoint`` the mutating call
goes there but the polling goes to https://compute.googleapis.com (google-cloud-compute 1.57).
The transport keeps those clients in ``_extended_operations_services`` (keys
``global_operations``, ``region_operations``, ``zone_operations``) and uses a cached one if
present, so seeding that cache with operations clients built with the same options keeps every
call on the endpoint. ``check_polling_endpoint`` fails loudly if a library upgrade changes this.
"""

from __future__ import annotations

_OPERATION_CLIENTS = {"global_operations": "GlobalOperationsClient",
                      "region_operations": "RegionOperationsClient",
                      "zone_operations": "ZoneOperationsClient"}


def make_client(cls, endpoint: str, credentials):
    """``cls`` (a compute_v1 client class) on ``endpoint`` (``http://127.0.0.1:<port>``; the
    scheme is what makes the REST transport speak plain http), polling included."""
    from google.cloud import compute_v1

    options = {"api_endpoint": endpoint}
    client = cls(credentials=credentials, client_options=options)
    cache = getattr(client._transport, "_extended_operations_services", None)
    if cache is None:     # an operations client itself: it polls nothing
        return client
    for key, name in _OPERATION_CLIENTS.items():
        cache[key] = getattr(compute_v1, name)(credentials=credentials, client_options=options)
    check_polling_endpoint(client)
    return client


def check_polling_endpoint(client) -> None:
    transport = client._transport
    for key in _OPERATION_CLIENTS:
        prop = getattr(type(transport), f"_{key}_client", None)
        if prop is None:
            continue   # this client polls no operations of that scope
        polling = getattr(transport, f"_{key}_client")
        if polling.api_endpoint != client.api_endpoint:
            raise RuntimeError(f"{type(client).__name__} would poll {key} at "
                               f"{polling.api_endpoint}, not {client.api_endpoint}")
