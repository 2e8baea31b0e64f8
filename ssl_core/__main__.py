"""``python -m ssl_core`` is the ``sslrun`` command; sweeps start their runs this way."""

from ssl_core.cli.entry import main

if __name__ == "__main__":
    main()
