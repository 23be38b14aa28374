"""Desired children as pure data: each builder returns the dict the operator wants to exist (no store calls)."""
