"""Pipeline REST API routes (organization API keys): lookup, batches, receipts,
change feed, and the Spawning-compatible URL query."""

from django.urls import URLPattern, path  # noqa: F401 - used as routes are added

urlpatterns: list[URLPattern] = []
