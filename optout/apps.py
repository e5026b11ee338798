from django.apps import AppConfig


class OptoutConfig(AppConfig):
    name = "optout"
    verbose_name = "Opt-outs and organizations"
    default_auto_field = "django.db.models.BigAutoField"
