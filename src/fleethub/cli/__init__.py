"""The ``fleethub`` command line."""
