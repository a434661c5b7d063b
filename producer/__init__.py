"""The producer: reads manifests, validates every row, registers a run and enqueues it."""
