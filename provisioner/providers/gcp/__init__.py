"""The GCP provider: Ray on Compute Engine (the head on an instance at a reserved internal
address, workers in a managed instance group), the global external Application LB (or a
regional passthrough Network LB) in front of every node's Serve proxy.

Modules: ``api`` (clients, operations, retries), ``common`` (ownership, names, the generic
Compute resource), ``network``, ``compute``, ``lb`` (the resource types; see
provisioner.providers.base).
"""
