"""The root of every seedq exception.

Each package keeps its own tree under this root (``producer.errors``,
``worker.errors``, ``worker.provider.errors``, ``simulator``): catching
:class:`SeedqError` at an entry point catches everything the project raises on
purpose, so anything else reaching the top is a bug, not bad input.

    SeedqError
    ├── ConfigError           settings that cannot work together
    │   └── LocalStoreError   the private redis-server of a local paid run cannot run
    └── (package trees)
"""


class SeedqError(Exception):
    """Base class of every error seedq raises on purpose."""


class ConfigError(SeedqError):
    """The settings are invalid or contradict each other."""


class LocalStoreError(ConfigError):
    """The private redis-server of a local paid run is missing, busy or will not start."""
