"""Pipeline REST API routes (organization API keys): lookup, batches, receipts,
change feed, and the Spawning-compatible URL query."""

from django.urls import URLPattern, path

from config import converters  # noqa: F401 - registers <any_uuid:...>
from optout import batch_api, pipeline_api, receipt_api, registry_api

urlpatterns: list[URLPattern] = []

urlpatterns += [
    path(
        "v1/receipts/public-key",
        receipt_api.ReceiptPublicKeyView.as_view(),
        name="api-receipts-public-key",
    ),
]

urlpatterns += [
    path("v1/lookup", pipeline_api.LookupView.as_view(), name="api-lookup"),
    path("v1/changes", pipeline_api.ChangesView.as_view(), name="api-changes"),
    # Spawning's path, trailing slash included: datadiligence posts to it as is.
    path("v2/query/urls/", pipeline_api.UrlQueryView.as_view(), name="api-query-urls"),
]

urlpatterns += [
    path("v1/batches", batch_api.BatchListSubmitView.as_view(), name="api-batches"),
    path("v1/batches/<any_uuid:id>", batch_api.BatchDetailView.as_view(), name="api-batch"),
    path(
        "v1/batches/<any_uuid:id>/exclusions",
        batch_api.BatchExclusionsView.as_view(),
        name="api-batch-exclusions",
    ),
]

urlpatterns += [
    path("v1/registry", registry_api.RegistryView.as_view(), name="api-registry"),
]
