"""Checkpoints of the deployed Serve applications, for ``recover``.

``custom://`` stores subclass :class:`CheckpointStore` (see ``examples/checkpoint_store``).
"""

from provisioner.checkpoint.stores import (  # noqa: F401  (the public names)
    CheckpointError,
    CheckpointStore,
    NoCheckpointError,
    open_store,
)
