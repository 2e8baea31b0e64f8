"""Sweep launchers: child processes here, Ray tasks, SLURM jobs through submitit."""
