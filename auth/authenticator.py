"""Authentication per server mode: api-key, entra, both (credential type from its shape), or none.

There is no fallback: a credential of one type is judged only by that type's validator, and a failure is final.
"""
import logging

from foundry_inference.auth import credentials
from foundry_inference.auth.errors import InvalidApiKey, InvalidToken
from foundry_inference.auth.principal import ANONYMOUS_PRINCIPAL

log = logging.getLogger("foundry_inference.auth")


class Authenticator:
    def __init__(self, *, mode, api_keys=None, entra=None):
        if mode in ("api-key", "both") and api_keys is None:
            raise ValueError(f"mode {mode} needs an ApiKeyAuthenticator")
        if mode in ("entra", "both") and entra is None:
            raise ValueError(f"mode {mode} needs an EntraTokenValidator")
        self.mode = mode
        self.api_keys = api_keys if mode in ("api-key", "both") else None
        self.entra = entra if mode in ("entra", "both") else None

    async def authenticate(self, headers):
        """The Principal behind `headers` (Tornado HTTPHeaders or a mapping); raises an AuthError subclass."""
        if self.mode == "none":
            return ANONYMOUS_PRINCIPAL
        cred = credentials.extract(headers)
        if cred.kind == credentials.JWT and self.entra is not None:
            return await self.entra.validate(cred.value)
        return self._judge(cred)

    def authenticate_now(self, headers):
        """authenticate() without a suspension: the Principal, an AuthError raised, or None when only the
        asynchronous path can decide (an Entra token, which may need the issuer's signing keys)."""
        if self.mode == "none":
            return ANONYMOUS_PRINCIPAL
        cred = credentials.extract(headers)
        if cred.kind == credentials.JWT and self.entra is not None:
            return None
        return self._judge(cred)

    def _judge(self, cred):
        """A credential that no token validator of this server takes: an API key, or a refusal."""
        if cred.kind == credentials.JWT:
            raise InvalidToken("Entra ID tokens are not accepted by this server; use an API key")
        if self.api_keys is None:
            if cred.source == "Authorization":
                raise InvalidToken("The bearer value is not a JWT; API keys are not accepted by this server")
            raise InvalidApiKey("API keys are not accepted by this server; use an Entra ID token")
        return self.api_keys.authenticate(cred.value)
