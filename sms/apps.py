from django.apps import AppConfig


class SmsConfig(AppConfig):
    name = "sms"
    verbose_name = "SMS"

    def ready(self) -> None:
        # sms.outbox connects the outbox's receiver of advice.models.message_posted.
        from sms import outbox, worker  # noqa: F401

        if worker.wanted_in_process():
            worker.start_in_process()
