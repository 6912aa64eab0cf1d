"""Runner: sweeps over slices (and, with the store, queued background jobs)."""
