from django.apps import AppConfig


class ConfigConfig(AppConfig):
    """The wiring: settings, the URLconf, site-wide middleware, the `serve` command (an app so
    that the command is found), and what the realtime kernel is handed at startup. No models."""

    name = "config"
    verbose_name = "Wiring"

    def ready(self) -> None:
        from advice import streams
        from realtime import hub

        # The kernel imports no domain code: it is told here how to load the queue.
        hub.configure(load_queue=streams.load_queue)
