"""The control plane REST API (port 8080)."""
