"""The exchanges' time zone (IST) and the trading day, in one place.

The queue stores naive UTC; OpenAlgo's strategies speak IST (``HH:MM`` squareoffs,
entry windows) and a trading day is an IST date.  Everything that converts between the
two goes through here.
"""

from datetime import datetime

import pytz

IST = pytz.timezone("Asia/Kolkata")


def ist_moment_utc(hhmm: str, now_utc: datetime) -> datetime:
    """``HH:MM`` (IST) on the IST day of ``now_utc``, as naive UTC."""
    hour, minute = (int(part) for part in hhmm.split(":"))
    today = pytz.utc.localize(now_utc).astimezone(IST)
    local = IST.localize(datetime(today.year, today.month, today.day, hour, minute))
    return local.astimezone(pytz.utc).replace(tzinfo=None)


def ist_to_utc(local: datetime) -> datetime:
    """A naive IST wall time as naive UTC."""
    return IST.localize(local).astimezone(pytz.utc).replace(tzinfo=None)


def ist_weekday(now_utc: datetime) -> int:
    """The IST weekday of ``now_utc``: 0 is Monday, 5 and 6 have no session."""
    return pytz.utc.localize(now_utc).astimezone(IST).weekday()


def trading_day(now_utc: datetime) -> str:
    """The IST date of ``now_utc``, YYYY-MM-DD."""
    return pytz.utc.localize(now_utc).astimezone(IST).strftime("%Y-%m-%d")


def day_start_utc(now_utc: datetime) -> datetime:
    """Midnight IST (the start of the trading day) of ``now_utc``, as naive UTC."""
    return ist_moment_utc("00:00", now_utc)
