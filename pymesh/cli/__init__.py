"""The ``pymesh`` command line."""
