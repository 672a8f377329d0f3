"""Per-track session recording into object storage (may use ``signalling.sfu`` only)."""
