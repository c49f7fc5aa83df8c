from django.apps import AppConfig


class ConfigConfig(AppConfig):
    """The wiring: settings, the URLconf, site-wide middleware, the `serve` command (an app so
    that the command is found), and what the realtime kernel and the domain are handed at
    startup. No models."""

    name = "config"
    verbose_name = "Wiring"

    def ready(self) -> None:
        from advice import events, streams
        from realtime import hub, publish

        # The kernel imports no domain code: it is told here how to load the queue...
        hub.configure(load_queue=streams.load_queue)
        # ...and the domain no transport: its committed events go to the kernel.
        events.connect(publish.committed)
