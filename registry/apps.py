from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "registry"
    verbose_name = "Registry (creators, photos, consent ledger)"
    default_auto_field = "django.db.models.BigAutoField"
