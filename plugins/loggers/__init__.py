"""Logging plugins: the run's numbers and pictures to other tools (TensorBoard)."""
