"""Detection-delay measurement of the decay monitor (``python -m tests.monitoring``)."""
