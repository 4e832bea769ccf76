"""The `tipstream` command line and the operator tools behind it (replay, demo, reports)."""
