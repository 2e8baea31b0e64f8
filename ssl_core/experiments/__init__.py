"""Experiments over many runs: sweeps, reports, plots."""
