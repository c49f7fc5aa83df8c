"""Add Sweden's public holidays for a year to the opening hours (the admin edits them after)."""

from django.core.management.base import BaseCommand, CommandParser

from advice.hours import swedish_holidays
from advice.models import Holiday


class Command(BaseCommand):
    help = "Add Sweden's public holidays (and the eves kept as holidays) for the given years."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("years", nargs="+", type=int)

    def handle(self, *args, years: list[int], **options) -> None:
        for year in years:
            added = 0
            for day, name in swedish_holidays(year):
                _holiday, created = Holiday.objects.get_or_create(date=day, defaults={"name": name})
                added += created
            self.stdout.write(f"{year}: {added} holidays added")
