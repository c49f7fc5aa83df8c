from django.apps import AppConfig


class InterpreterConfig(AppConfig):
    """The interpreter's page and socket: a transport adapter like chat/, over the domain in
    advice.interpreters."""

    name = "interpreter"
    default_auto_field = "django.db.models.BigAutoField"
