"""Creator pages of the registry app (the REST API lives in api_urls.py)."""

from django.urls import path

from config import converters  # noqa: F401 - registers <any_uuid:...>
from registry import views

app_name = "registry"

urlpatterns = [
    path("", views.home, name="home"),
    path("privacy/", views.privacy, name="privacy"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/signup/done/", views.signup_done, name="signup_done"),
    path("accounts/confirm/resend/", views.confirmation_resend, name="confirmation_resend"),
    path("accounts/confirm/<uidb64>/<token>/", views.confirm, name="confirm"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", views.LogoutView.as_view(), name="logout"),
    path("accounts/password-reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path(
        "accounts/password-reset/done/",
        views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "accounts/reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "accounts/reset/done/",
        views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("me/photos/", views.photos, name="photos"),
    path("me/photos/upload/", views.photos_upload, name="photos_upload"),
    path("me/photos/hashes/", views.photos_upload_hashes, name="photos_upload_hashes"),
    path("me/photos/<any_uuid:photo_id>/", views.photo_detail, name="photo_detail"),
    path("me/claims/", views.claims, name="claims"),
    path("me/consent/", views.consent_history, name="consent_history"),
    path("me/tokens/", views.tokens, name="tokens"),
    path("me/tokens/<any_uuid:token_id>/revoke/", views.token_revoke, name="token_revoke"),
]
