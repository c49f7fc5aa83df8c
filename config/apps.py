from django.apps import AppConfig


class ConfigConfig(AppConfig):
    """The wiring: settings, the URLconf, site-wide middleware, and the `serve` command (an app
    so that the command is found). Holds no models."""

    name = "config"
    verbose_name = "Wiring"
