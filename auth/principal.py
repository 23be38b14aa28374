"""Who is calling (Principal) and what they act on (Resource): the values the authenticator hands the authorizer."""
from dataclasses import dataclass, field

# Principal kinds. Key principals are authorized locally (see authz.KeyGrantAuthorizer); token principals go to the
# configured authorizer.
DEPLOYMENT_KEY = "deployment_key"   # a deployment's primary or secondary API key
ADMIN_KEY = "admin_key"             # the control plane's admin API key
USER = "user"                       # Entra ID delegated (user) token
APP = "app"                         # Entra ID application (client credentials) token
ANONYMOUS = "anonymous"             # authentication switched off (mode none)

KEY_KINDS = frozenset({DEPLOYMENT_KEY, ADMIN_KEY})


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `identity` is stable and safe to log (an Entra `oid` or a key's name, never a key)."""

    identity: str
    kind: str
    roles: tuple = ()
    groups: tuple = ()
    scopes: tuple = ()
    tenant: str = None
    display: str = None          # preferred_username / app id, for logs only
    claims: dict = field(default=None, compare=False, repr=False)

    @property
    def is_key(self):
        return self.kind in KEY_KINDS


@dataclass(frozen=True)
class Resource:
    """What an action is applied to.

    `namespace`/`name` identify a ModelDeployment (both None = the whole collection, cluster-wide). `verb` is an
    optional Kubernetes verb hint derived from the HTTP method (get/list/create/update/patch/delete) that the
    SubjectAccessReview authorizer uses to be precise about writes; other authorizers ignore it.
    """

    namespace: str = None
    name: str = None
    verb: str = None

    def __str__(self):
        ns = self.namespace or "*"
        return f"{ns}/{self.name or '*'}" + (f"#{self.verb}" if self.verb else "")


ANONYMOUS_PRINCIPAL = Principal(identity="anonymous", kind=ANONYMOUS)
