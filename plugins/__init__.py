"""sslrun's built-in plugins (import name ``ssl_plugins``).

Each module here is an entry point of the ``sslrun.plugins`` group, registered
exactly like a third-party plugin package.
"""
