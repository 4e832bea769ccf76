"""``tipstream console``: the operator's status page (one process per deployment)."""
