"""Project configuration: settings, Celery app, URL routing, API glue."""

from config.celery import app as celery_app

__all__ = ["celery_app"]
