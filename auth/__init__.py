"""Authentication (API keys, Entra ID JWTs) and authorization, shared by every server."""
