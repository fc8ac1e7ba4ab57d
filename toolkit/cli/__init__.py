"""The ``edgekit`` command line: one module per command, each with ``register`` and ``run``."""
