"""Timestamps as Kubernetes writes them: RFC 3339, UTC, whole seconds."""
import datetime


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_after(seconds):
    """The time `seconds` from now, rounded up to the next whole second (never earlier than the real moment)."""
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    whole = moment.replace(microsecond=0)
    if moment.microsecond:
        whole += datetime.timedelta(seconds=1)
    return whole.strftime("%Y-%m-%dT%H:%M:%SZ")
