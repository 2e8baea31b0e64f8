"""The sslrun command line and its in-process entry points."""
