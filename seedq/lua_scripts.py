"""The Lua scripts of the store's gateways (``seedq/lua/*.lua``), read from the installed
package and registered on a client. Each file says in its header which keys it takes
(all as KEYS where they are known before the call) and what it returns; a missing file
is a broken install (pyproject's package-data ships them), caught at the first store.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

FOLDER = "lua"


@cache
def source(name: str) -> str:
    """The text of ``seedq/lua/{name}.lua`` (read once per process)."""
    return resources.files("seedq").joinpath(FOLDER, f"{name}.lua").read_text(encoding="utf-8")


def register(client: redis.Redis, name: str) -> Script:
    """The script ``name`` on this client (sent by hash, loaded on first use)."""
    return client.register_script(source(name))
