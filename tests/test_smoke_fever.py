"""The four fever conversations of the issue's 'done' list, through the signed webhook."""

from conftest import ONCOLOGY_LINE, records


def test_38_6_is_urgent(app, phone):
    replies = phone.conversation("fever", "no", "38.6")
    assert replies[-1].startswith(f"Call the 24-hour oncology line now at {ONCOLOGY_LINE}")
    assert records(app)[0]["tier"] == "URGENT"
    assert records(app)[0]["reasons"] == ["temperature 38.6 C >= 38.0"]
