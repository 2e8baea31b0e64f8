"""The training engine: hooks, the run, the loop and what it needs at run time."""
