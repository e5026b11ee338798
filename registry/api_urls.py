"""Creator REST API routes under /api/v1/me/ (photos, claims, consent events)."""

from django.urls import URLPattern, path

from config import converters  # noqa: F401 - registers <any_uuid:...>
from registry import api

urlpatterns: list[URLPattern] = [
    path("photos", api.PhotoListRegisterView.as_view(), name="api-photos"),
    path("photos/<any_uuid:id>", api.PhotoDetailView.as_view(), name="api-photo"),
    path("claims", api.ClaimListAddView.as_view(), name="api-claims"),
    path("consent-events", api.ConsentEventListView.as_view(), name="api-consent-events"),
]
