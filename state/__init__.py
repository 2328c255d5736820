"""State of provisioner: the document, its backends, locks and the journal of pending operations.

This package knows nothing of Ray or of providers; ``provisioner`` depends on it, never the reverse.
"""
