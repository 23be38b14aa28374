"""Authentication and authorization failures, each with one HTTP status and one code from the contract.

Framework-free: the Tornado base handler (apps/base.py) renders them in the envelope of the server they occur in.
"""


class AuthError(Exception):
    status = 401
    code = "unauthorized"
    kind = "Unauthorized"  # the control plane's `error` value for this failure (docs/api.md, decision 5)

    def __init__(self, message=None):
        super().__init__(message or self.default_message)
        self.message = message or self.default_message

    default_message = "Authentication failed"

    @property
    def headers(self):
        return {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}


class MissingCredentials(AuthError):
    code = "missing_credentials"
    default_message = "No credentials were supplied: send Authorization: Bearer <key or token> or api-key: <key>"


class AmbiguousAuth(AuthError):
    status = 400
    code = "ambiguous_auth"
    kind = "BadRequest"
    default_message = "Send either an Authorization header or an api-key header, not both"


class InvalidApiKey(AuthError):
    code = "invalid_api_key"
    default_message = "The API key is not valid"


class InvalidToken(AuthError):
    code = "invalid_token"
    default_message = "The token is not valid"


class InsufficientPermissions(AuthError):
    status = 403
    code = "insufficient_permissions"
    kind = "Forbidden"
    default_message = "The caller is not allowed to perform this action"


class RbacCheckUnavailable(AuthError):
    status = 503
    code = "rbac_check_unavailable"
    kind = "ServiceUnavailable"
    default_message = "The authorization service is unreachable; try again later"

    @property
    def headers(self):
        return {"Retry-After": "5"}


class SigningKeysUnavailable(RbacCheckUnavailable):
    """The token issuer's signing keys could not be fetched and none are cached.

    Same status and code as RbacCheckUnavailable (503 `rbac_check_unavailable`, the contract's only 503 auth code): the
    caller cannot be checked right now, which is the caller-visible meaning of both; only the message differs.
    """

    default_message = "The token issuer's signing keys are unavailable; try again later"
