"""The Lua scripts of the Redis gateways, read once from ``.lua`` files in the package.

Each package keeps its scripts in its own ``lua/`` folder (``seedq/lua``,
``worker/lua``), shipped as package data, so a script reads as Lua (with its KEYS and
ARGV documented at its top) and not as a Python string. Every key a script here touches
is passed in KEYS where it is known before the call (``tests/test_lua.py``). A script
missing from an installed package fails the first caller that loads it
(FileNotFoundError): a broken install, caught at the first store.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

FOLDER = "lua"


@cache
def load(name: str, package: str = "seedq") -> str:
    """The text of ``<package>/lua/<name>.lua``, read once per process."""
    return (resources.files(package) / FOLDER / f"{name}.lua").read_text(encoding="utf-8")


def register(client: redis.Redis, name: str, package: str = "seedq") -> Script:
    """The script ``name`` on this client (sent by hash, loaded on first use)."""
    return client.register_script(load(name, package))
