"""Schemathesis hooks: strategies for the string formats of the scheduler's OpenAPI document that
JSON Schema cannot state, so generated requests hold values the service accepts.

- `cron`: a 5-field expression, or 6 with seconds first, that matches some date (days of the
  month up to 28, so every month has them);
- `iana-time-zone`: an IANA time zone name, from a fixed sample (half-hour, quarter-hour and
  southern-hemisphere daylight-saving zones included).
"""

import schemathesis
from hypothesis import strategies as st


def field(low, high, names=()):
    """One cron field over low..high: `*`, a value, a range, a step or a list."""
    value = st.integers(low, high).map(str)
    if names:
        value = value | st.sampled_from(names)
    ranges = st.tuples(st.integers(low, high), st.integers(low, high)).map(
        lambda ab: f"{min(ab)}-{max(ab)}"
    )
    steps = st.integers(1, high - low + 1).map(lambda n: f"*/{n}")
    lists = st.lists(st.integers(low, high), min_size=2, max_size=4, unique=True).map(
        lambda values: ",".join(map(str, sorted(values)))
    )
    return st.just("*") | value | ranges | steps | lists


MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

five_fields = st.tuples(
    field(0, 59), field(0, 23), field(1, 28), field(1, 12, MONTHS), field(0, 6, WEEKDAYS)
).map(" ".join)
six_fields = st.tuples(field(0, 59), five_fields).map(" ".join)

schemathesis.openapi.format("cron", five_fields | six_fields)
schemathesis.openapi.format(
    "iana-time-zone",
    st.sampled_from(
        (
            "UTC",
            "Europe/Berlin",
            "Europe/London",
            "America/New_York",
            "America/Sao_Paulo",
            "Asia/Kolkata",
            "Asia/Kathmandu",
            "Australia/Lord_Howe",
            "Pacific/Chatham",
            "Etc/GMT+12",
        )
    ),
)
