from django.apps import AppConfig


class OptoutConfig(AppConfig):
    name = "optout"
    verbose_name = "Opt-outs and organizations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from optout import checks  # noqa: F401 - registers the system checks
