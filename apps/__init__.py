"""Tornado apps: control plane (8080), predictive server (8000), chat server (5000)."""
