"""Polling operator: reconcilers, child builders, catalog sync, embedded node agent."""
