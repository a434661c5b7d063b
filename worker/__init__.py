"""The worker: the Celery app (``celery -A worker worker``) and the pipeline it runs."""

from worker.app import app

celery = app
__all__ = ["app", "celery"]
