"""Creator REST API routes under /api/v1/me/ (photos, claims, consent events)."""

from django.urls import URLPattern, path

from registry import api

urlpatterns: list[URLPattern] = [
    path("photos", api.PhotoListRegisterView.as_view(), name="api-photos"),
    path("photos/<uuid:id>", api.PhotoDetailView.as_view(), name="api-photo"),
    path("claims", api.ClaimListAddView.as_view(), name="api-claims"),
    path("consent-events", api.ConsentEventListView.as_view(), name="api-consent-events"),
]
