from collections.abc import Callable

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path, re_path
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config import api, health
from optout import operator_views

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    # The operator dashboard, inside the admin (its login, staff only); before
    # admin.site.urls, whose catch-all would otherwise answer these paths.
    path(
        "admin/dashboard/",
        admin.site.admin_view(operator_views.dashboard),
        name="operator_dashboard",
    ),
    path(
        "admin/dashboard.json",
        admin.site.admin_view(operator_views.dashboard_json),
        name="operator_dashboard_json",
    ),
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
# /api/ too: with DEBUG off, a Host header not in ALLOWED_HOSTS (400), a
# PermissionDenied raised by middleware (403), an unknown path (404) or an
# unhandled exception (500) would otherwise get an HTML page.
def _json_under_api(
    json_view: Callable[..., HttpResponse], page_view: Callable[..., HttpResponse]
) -> Callable[..., HttpResponse]:
    """An error handler: ``json_view`` for a path under /api/, Django's page
    (``page_view``) elsewhere; same arguments (the request, and the exception
    Django passes to every handler but 500's)."""

    def handler(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
        view = json_view if request.path.startswith("/api/") else page_view
        return view(request) if exception is None else view(request, exception)

    return handler


handler400 = _json_under_api(api.json_bad_request, defaults.bad_request)
handler403 = _json_under_api(api.json_permission_denied, defaults.permission_denied)
handler404 = _json_under_api(api.json_not_found, defaults.page_not_found)
handler500 = _json_under_api(api.json_server_error, defaults.server_error)
