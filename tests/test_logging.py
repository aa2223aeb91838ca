"""No phone number reaches a log line, whoever wrote it; record ids stay readable."""

import logging

import pytest

from bot import MaskPhones


@pytest.mark.parametrize("text,hidden", [
    ("from +15551234567", "+15551234567"), ("call 555-123-4567 now", "555-123-4567"),
    ("(555) 123 4567", "123 4567"), ("15551234567", "15551234567"),
    ("+44 7700 900123", "7700 900123"),
    ('"GET /dashboard/patients/%2B15551234567 HTTP/1.1" 200', "5551234567"),
])
def test_numbers_are_masked(text, hidden):
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "msg %s", (text,), None)
    MaskPhones().filter(record)
    assert hidden not in record.getMessage()


@pytest.mark.parametrize("text", ["record 1732300000000-0 paged", "temp 38.6 C",
                                  "on 2026-11-24T21:04:05Z", "took 12.5 ms"])
def test_other_numbers_are_left_alone(text):
    record = logging.LogRecord("x", logging.INFO, __file__, 1, text, None, None)
    MaskPhones().filter(record)
    assert record.getMessage() == text


def test_red_flags_with_the_same_advice_say_it_once(phone):
    reply = phone.send("I cant breathe and my lips look blue")
    assert reply.count("Sit up. Do not lie flat.") == 1


def test_fahrenheit_reasons_show_celsius_too(app, phone):
    from conftest import records

    phone.conversation("fever", "no", "101.3F")
    assert records(app)[0]["reasons"] == ["temperature 101.3 F (38.5 C) >= 38.0"]


# The gunicorn access log, numbers in every encoding, a name search: tests/test_log_privacy.py
