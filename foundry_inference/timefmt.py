"""Timestamps as Kubernetes writes them: RFC 3339, UTC, whole seconds."""
import datetime


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
