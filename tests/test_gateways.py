"""One gateway to Redis (docs/architecture.md, "The job store is the gateway to Redis"):
only the store's modules, and the admission and throttle modules for their own keys,
speak Redis. Everything else calls their named methods. Checked on the source's syntax
tree, so a new ``store.redis.hget(...)`` or ``import redis`` elsewhere fails here. The
packages are checked; ``bench/`` (measurements that read Redis itself) and the tests are
not. (No import-linter ``forbidden`` contract beside it: it would need this allowlist a
second time, and would miss ``store.redis.hget``, which imports nothing.)"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("seedq", "worker", "producer", "provider", "storage", "simulator", "cli")

# Modules that speak Redis: the store and its ledger of bills, and the gateways of
# their own keys (slots and leases, the throttles' state, runs' timing).
GATEWAYS = frozenset(
    {
        "seedq/store.py",
        "seedq/runstore.py",
        "seedq/billing.py",
        "seedq/admission.py",
        "seedq/leases.py",
        "seedq/budget.py",
        "seedq/scripts.py",
        "seedq/broker.py",  # reads kombu's own keys in the broker: queues, unacked
        "worker/throttle.py",
        "worker/timekeeper.py",
        "producer/timing.py",
    }
)
# Modules that make (or type) a connection and hand it to a gateway; no commands.
CONNECTION_MAKERS = frozenset(
    {
        "seedq/queueing.py",  # redis_client: the settings' server, else fakeredis
        "seedq/broker.py",  # the broker's shared connection pool
        "cli/localredis.py",  # the private redis-server of a paid local run
        "cli/embedded.py",  # the demo's fakeredis
        "worker/scheduled.py",  # types the client of TimedStore and the firing claim
    }
)
# The one use of the connection allowed outside the gateways: handing ``store.redis``
# to the gateways that keep their own keys (the throttles' state, runs' timing, the
# watch of runs whose events are announced).
HANDS_CONNECTION_TO = frozenset({"from_spec", "apply_timing", "RunWatch"})
# Names that are Redis commands and nothing else in this code base.
COMMANDS = frozenset(
    [
        "pipeline",
        "register_script",
        "eval",
        "evalsha",
        "execute_command",
        "hget",
        "hgetall",
        "hset",
        "hsetnx",
        "hmget",
        "hdel",
        "hincrby",
        "hincrbyfloat",
        "hexists",
        "zadd",
        "zrem",
        "zrange",
        "zrangebyscore",
        "zcard",
        "zscore",
        "incr",
        "incrby",
        "lrange",
        "llen",
        "rpush",
        "lpush",
        "sadd",
        "srem",
        "smembers",
        "sismember",
        "expire",
        "pexpire",
        "flushdb",
    ]
)


def modules() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            yield name, ast.parse(path.read_text(encoding="utf-8"), filename=name)


def _called(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def violations(name: str, tree: ast.Module) -> Iterator[str]:
    handed = {
        id(arg)
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and _called(call.func) in HANDS_CONNECTION_TO
        for arg in call.args
    }
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom) and name not in CONNECTION_MAKERS:
            found = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for module in found:
                if module and module.split(".")[0] in ("redis", "fakeredis"):
                    yield f"{where} imports {module}"
        elif isinstance(node, ast.Attribute) and node.attr == "redis" and id(node) not in handed:
            yield f"{where} uses .redis"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in COMMANDS
        ):
            yield f"{where} calls .{node.func.attr}()"


def test_only_the_gateways_speak_redis() -> None:
    found = [
        problem
        for name, tree in modules()
        if name not in GATEWAYS
        for problem in violations(name, tree)
    ]
    assert found == [], "speak Redis through JobStore's named methods:\n" + "\n".join(found)


def test_the_check_sees_each_way_of_reaching_redis() -> None:
    source = """
import redis
from fakeredis import FakeRedis
store.redis.hget("k", "f")
with rt.store.redis.pipeline() as pipe: pass
client.zadd("k", {"m": 1})
Throttle.from_spec(store.redis, "poll", "5/s")
Billing(store.redis)
"""
    found = list(violations("x.py", ast.parse(source)))
    assert sorted(found) == [
        "x.py:2 imports redis",
        "x.py:3 imports fakeredis",
        "x.py:4 calls .hget()",
        "x.py:4 uses .redis",
        "x.py:5 calls .pipeline()",
        "x.py:5 uses .redis",
        "x.py:6 calls .zadd()",
        "x.py:8 uses .redis",  # the ledger is store.billing; line 7 is the exemption
    ]


def test_the_allowlists_name_real_modules() -> None:
    """A module renamed or removed leaves no stale exemption behind."""
    for name in GATEWAYS | CONNECTION_MAKERS:
        assert (ROOT / name).is_file(), name
