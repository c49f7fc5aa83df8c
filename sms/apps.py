from django.apps import AppConfig


class SmsConfig(AppConfig):
    name = "sms"
    verbose_name = "SMS"

    def ready(self) -> None:
        # sms.outbox connects the outbox's receiver of advice.models.message_posted.
        from advice import contacts
        from sms import outbox, worker  # noqa: F401
        from sms.contacts import with_contacts

        # The console shows SMS senders' numbers through the domain's registry (advice.contacts).
        contacts.register(with_contacts)

        if worker.wanted_in_process():
            worker.start_in_process()
