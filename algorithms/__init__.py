"""Built-in algorithm plugins; each module registers itself with `harness.registry`."""
