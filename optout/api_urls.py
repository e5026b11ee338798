"""Creator REST API routes under /api/v1/me/ (opt-outs)."""

from django.urls import URLPattern, path

from config import converters  # noqa: F401 - registers <any_uuid:...>
from optout import api

urlpatterns: list[URLPattern] = [
    path("opt-outs", api.OptOutListFileView.as_view(), name="api-opt-outs"),
    path("opt-outs/<any_uuid:id>", api.OptOutDetailView.as_view(), name="api-opt-out"),
    path(
        "opt-outs/<any_uuid:id>/change", api.OptOutChangeView.as_view(), name="api-opt-out-change"
    ),
    path(
        "opt-outs/<any_uuid:id>/withdraw",
        api.OptOutWithdrawView.as_view(),
        name="api-opt-out-withdraw",
    ),
]
