"""HTTP streaming: one encoder's output fanned out to any number of listeners."""
