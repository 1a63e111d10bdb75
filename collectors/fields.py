"""An exact decimal column that keeps the exchange's decimal strings on every database."""

from decimal import Decimal, InvalidOperation

from django.core import exceptions
from django.db import models


class ExactDecimalField(models.Field):
    """DECIMAL(max_digits, decimal_places) on MySQL/PostgreSQL, TEXT on SQLite.

    Django's DecimalField on SQLite uses NUMERIC affinity, which turns '12345678.12345678'
    into a 15-digit float; exchange volumes have more digits than that. Storing the string
    keeps the value exact; SQLite still does arithmetic on it in SUM/AVG.
    """

    description = "Exact decimal"

    def __init__(self, *args, max_digits=36, decimal_places=8, **kwargs):
        self.max_digits, self.decimal_places = max_digits, decimal_places
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.update(max_digits=self.max_digits, decimal_places=self.decimal_places)
        return name, path, args, kwargs

    def db_type(self, connection):
        if connection.vendor == "sqlite":
            return "text"
        return f"numeric({self.max_digits}, {self.decimal_places})"

    def to_python(self, value):
        if value is None or isinstance(value, Decimal):
            return value
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise exceptions.ValidationError(f"{value!r} is not a decimal number", code="invalid") from None

    def from_db_value(self, value, expression, connection):
        return None if value is None else Decimal(value)

    def get_prep_value(self, value):
        value = self.to_python(value)
        return None if value is None else str(value)
