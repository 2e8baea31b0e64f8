"""Plugins that serve ``sslrun tune``: a trial's run reports to its study (pruning)."""
