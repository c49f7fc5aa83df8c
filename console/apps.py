from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The advisor's console: its pages (password, then TOTP, then the console), its socket, and
    the session rules both follow. A transport adapter like chat/, over the domain in advice/.
    No models: advisors' profiles are the domain's (advice.AdvisorProfile)."""

    name = "console"
    verbose_name = "Advisor console"

    def ready(self) -> None:
        # The session clocks start at login; a logout or a deactivated account closes sockets.
        from console import signals  # noqa: F401
