"""Role-table authorizer: JWT app roles (`roles`) and group ids (`groups`) mapped to allowed actions by configuration.

The offline default: no network, decisions are a dictionary lookup. A grant is an exact action, `*` (everything) or a
prefix ending in `/*` (e.g. `deployments/*`).
"""
from foundry_inference.auth import actions
from foundry_inference.auth.authz import deny

DEFAULT_ROLE_TABLE = {
    "roles": {
        "Foundry.Admin": ["*"],
        "Foundry.Contributor": ["deployments/*", actions.DATA_ACTION],
        "Foundry.Reader": [actions.DEPLOYMENTS_READ],
        "Foundry.User": [actions.DATA_ACTION],
    },
    "groups": {},
}


def grants(granted, action):
    for grant in granted:
        if grant == "*" or grant == action:
            return True
        if grant.endswith("/*") and action.startswith(grant[:-1]):
            return True
    return False


class RoleTableAuthorizer:
    def __init__(self, table=None):
        table = table if table is not None else DEFAULT_ROLE_TABLE
        self.roles = {name: tuple(acts) for name, acts in table.get("roles", {}).items()}
        self.groups = {gid.lower(): tuple(acts) for gid, acts in table.get("groups", {}).items()}

    def allowed(self, principal, action):
        for role in principal.roles:
            if grants(self.roles.get(role, ()), action):
                return True
        for group in principal.groups:
            if grants(self.groups.get(group.lower(), ()), action):
                return True
        return False

    async def authorize(self, principal, action, resource):
        if not self.allowed(principal, action):
            raise deny(action)
