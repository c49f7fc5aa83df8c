from django.apps import AppConfig


class SmsConfig(AppConfig):
    name = "sms"
    verbose_name = "SMS"

    def ready(self) -> None:
        # sms.outbox connects the outbox's receiver of advice.models.message_posted.
        from django.db.models import Exists, OuterRef, Q

        from advice import contacts
        from advice.choices import Channel
        from sms import outbox, worker  # noqa: F401
        from sms.contacts import with_contacts
        from sms.models import SmsThread

        # The console shows SMS senders' numbers through the domain's registry (advice.contacts).
        contacts.register(with_contacts)
        # An SMS conversation can be answered while it has a number (the domain's rule).
        contacts.register_reachable(
            Channel.SMS, Q(Exists(SmsThread.objects.filter(conversation=OuterRef("pk"))))
        )

        if worker.wanted_in_process():
            worker.start_in_process()
