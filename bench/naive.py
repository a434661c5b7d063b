"""The baseline of bench/throughput.py: the way a job queue is usually first written.

One Celery task per job that enqueues, then polls in place with ``sleep`` until the
generation ends, then downloads it: each job holds a worker slot for its whole
generation, and the only throttle is Celery's per-worker ``rate_limit``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from provider.client import OxenClient

app = Celery("naive", broker=os.environ.get("NAIVE_BROKER_URL", "memory://localhost/"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": 6 * 3600},
)
RATE = os.environ.get("NAIVE_RATE", "50/s")
POLL_S = float(os.environ.get("NAIVE_POLL_S", "0.5"))
DONE_KEY = "naive:done"


@app.task(name="naive.generate", rate_limit=RATE)
def generate(model: str, params: dict[str, Any]) -> None:
    # The simulator serves results on loopback.
    client = OxenClient(
        os.environ["NAIVE_PROVIDER_URL"], os.environ["NAIVE_API_KEY"], allow_private_urls=True
    )
    try:
        gid = client.enqueue(model, params)[0].generation_id
        while True:
            time.sleep(POLL_S)
            gen = client.get(gid)
            if gen.status in ("succeeded", "failed", "cancelled"):
                break
        if gen.status == "succeeded" and gen.result_url:
            with tempfile.TemporaryDirectory() as folder:
                client.download(gen.result_url, Path(folder) / "v.mp4", max_bytes=2**31)
    finally:
        client.close()
        redis.Redis.from_url(os.environ["NAIVE_REDIS_URL"]).incr(DONE_KEY)
