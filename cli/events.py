"""``seedq events``: the long-running listener that hands finished videos to delivery
straight from the provider's completion events."""

from __future__ import annotations

import signal
import threading

from cli.console import make_console
from seedq.queueing import make_celery
from seedq.settings import PIPELINE_NEEDS, load_settings, require

out = make_console()
err = make_console(stderr=True)


def events_command() -> None:
    """Listen to the provider's completion events and hand finished videos to delivery."""
    from seedq.dispatch import celery_sender
    from worker.events import listen
    from worker.runtime import get_runtime

    settings = load_settings()
    require(settings, "seedq events", *PIPELINE_NEEDS)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    app = make_celery(settings)
    err.print("listening for completion events (Ctrl-C stops)")
    handled = listen(get_runtime(), celery_sender(app), stop)
    err.print(f"stopped; {handled} completion(s) handed to delivery")
