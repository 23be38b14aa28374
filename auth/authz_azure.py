"""Azure RBAC checkAccess backend (ARM `Microsoft.Authorization/checkaccess`), as Azure Arc's guard webhook calls it.

Request: POST {endpoint}{scope}/providers/Microsoft.Authorization/checkaccess?api-version={api_version}
    {"Subject": {"Attributes": {"ObjectId": <oid>, "Groups": [...]}},
     "Actions": [{"Id": <action>, "IsDataAction": true}],
     "Resource": {"Id": <scope>}}
Response 200: a JSON array (or {"value": [...]}) of {"actionId", "accessDecision": "Allowed" | "NotAllowed" |
"Denied", ...}; allowed only when every decision for our action is "Allowed". Any other status, a timeout or an
unparseable body is BackendUnavailable (-> cached decision or 503), never a silent allow or deny.

Action names: the data-plane DataAction is sent as is; control-plane actions become
`{action_prefix}/foundrylocal.azure.com/modeldeployments/{read|write|delete|listKeys/action|regenerateKey/action}`
(the form Arc uses for custom resources on connected clusters; prefix configurable). ARM needs a bearer token for the
platform's own identity: it is read from `token_file` (refreshed by a workload-identity/managed-identity sidecar) or
supplied by `token_provider`.
"""
import urllib.parse

from foundry_inference.auth import actions
from foundry_inference.auth.authz import BackendUnavailable
from foundry_inference.auth.http import UpstreamUnavailable, fetch_json

CHECKACCESS_PATH = "/providers/Microsoft.Authorization/checkaccess"


def azure_action(action, prefix):
    if actions.is_data_action(action):
        return action
    verb = action.split("/", 1)[1]      # "read", "listKeys/action", ...
    return f"{prefix}/foundrylocal.azure.com/modeldeployments/{verb}"


def file_token_provider(path):
    def read():
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip() or None
        except OSError:
            return None
    return read


class AzureCheckAccessBackend:
    def __init__(self, *, endpoint, scope, api_version="2018-09-01-preview", token_provider=None,
                 action_prefix="Microsoft.Kubernetes/connectedClusters", timeout_s=5.0, fetch=fetch_json):
        self.scope = scope.rstrip("/")
        query = urllib.parse.urlencode({"api-version": api_version})
        self.url = f"{endpoint.rstrip('/')}{self.scope}{CHECKACCESS_PATH}?{query}"
        self.token_provider = token_provider
        self.action_prefix = action_prefix
        self.timeout_s = timeout_s
        self.fetch = fetch

    def request_body(self, principal, action):
        return {
            "Subject": {"Attributes": {"ObjectId": principal.identity, "Groups": list(principal.groups)}},
            "Actions": [{"Id": azure_action(action, self.action_prefix), "IsDataAction": True}],
            "Resource": {"Id": self.scope},
        }

    async def check(self, principal, action, resource):
        headers = {}
        if self.token_provider is not None:
            token = self.token_provider()
            if not token:
                raise BackendUnavailable("no ARM access token available for checkAccess")
            headers["Authorization"] = f"Bearer {token}"
        try:
            status, doc = await self.fetch(self.url, method="POST", body=self.request_body(principal, action),
                                           headers=headers, timeout=self.timeout_s)
        except UpstreamUnavailable as exc:
            raise BackendUnavailable(str(exc)) from None
        if status != 200:
            raise BackendUnavailable(f"checkAccess answered HTTP {status}")
        decisions = doc.get("value") if isinstance(doc, dict) else doc
        if not isinstance(decisions, list) or not decisions:
            raise BackendUnavailable("checkAccess answered without decisions")
        wanted = azure_action(action, self.action_prefix).lower()
        mine = [d for d in decisions if isinstance(d, dict) and str(d.get("actionId", wanted)).lower() == wanted]
        if not mine:
            raise BackendUnavailable("checkAccess answered without a decision for the requested action")
        return all(d.get("accessDecision") == "Allowed" for d in mine)
