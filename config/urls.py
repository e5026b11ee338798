from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path, re_path
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config import api, health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/me/", include("registry.api_urls")),
    path("api/v1/me/", include("optout.api_urls")),
    path("api/", include("optout.pipeline_urls")),
    # Whatever else is under /api/ (a malformed id too) is a JSON 404. handler404
    # does that only with DEBUG off; a development server would answer with
    # Django's HTML debug page. CSRF-exempt like every API view, so that a POST
    # gets the same 404 instead of an HTML CSRF failure.
    re_path(r"^api/", csrf_exempt(api.json_not_found)),
    path("", include("registry.urls")),
    path("", include("optout.urls")),
]


# Errors Django answers itself, before or outside any API view, are JSON under
# /api/ too: with DEBUG off, a Host header not in ALLOWED_HOSTS (400) or a
# PermissionDenied raised by middleware (403) would otherwise get an HTML page.
def handler400(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return api.json_bad_request(request, exception)
    return defaults.bad_request(request, exception)


def handler403(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return api.json_permission_denied(request, exception)
    return defaults.permission_denied(request, exception)


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return api.json_not_found(request, exception)
    return defaults.page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return api.json_server_error(request)
    return defaults.server_error(request)
