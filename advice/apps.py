from django.apps import AppConfig


class AdviceConfig(AppConfig):
    name = "advice"
    verbose_name = "Advice line"

    def ready(self) -> None:
        from advice import hours

        hours.connect_signals()
