"""Unit tests of the operator (pure builders, status, settings; reconciles on the embedded store)."""
