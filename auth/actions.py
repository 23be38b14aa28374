"""The actions of the contract and how HTTP methods map onto them.

Control plane (the reference): GET/HEAD -> deployments/read, POST/PUT/PATCH -> deployments/write,
DELETE -> deployments/delete. A deployment's API keys are their own actions (Azure's model): reading them is
deployments/listKeys/action, rotating one deployments/regenerateKey/action - never implied by deployments/read.
Data plane: the Azure RBAC DataAction for chat completions, which a valid API key of the deployment grants outright
and which JWT callers need from the authorizer.
"""

CONTROL = "control"
DATA = "data"
PLANES = (CONTROL, DATA)

DEPLOYMENTS_READ = "deployments/read"
DEPLOYMENTS_WRITE = "deployments/write"
DEPLOYMENTS_DELETE = "deployments/delete"
KEYS_LIST = "deployments/listKeys/action"
KEYS_REGENERATE = "deployments/regenerateKey/action"
KEY_ACTIONS = frozenset({KEYS_LIST, KEYS_REGENERATE})
CONTROL_ACTIONS = frozenset({DEPLOYMENTS_READ, DEPLOYMENTS_WRITE, DEPLOYMENTS_DELETE}) | KEY_ACTIONS

DATA_ACTION = "Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action"

_CONTROL_BY_METHOD = {
    "GET": DEPLOYMENTS_READ,
    "HEAD": DEPLOYMENTS_READ,
    "OPTIONS": DEPLOYMENTS_READ,
    "POST": DEPLOYMENTS_WRITE,
    "PUT": DEPLOYMENTS_WRITE,
    "PATCH": DEPLOYMENTS_WRITE,
    "DELETE": DEPLOYMENTS_DELETE,
}


def action_for(method, plane):
    """The action a request needs; None for a method we do not know (the caller denies it)."""
    if plane == DATA:
        return DATA_ACTION
    return _CONTROL_BY_METHOD.get(method.upper())


def is_data_action(action):
    return action not in CONTROL_ACTIONS


def verb_for(method, named):
    """Kubernetes verb hint for a control-plane request (`named`: the path names one object)."""
    method = method.upper()
    if method in ("GET", "HEAD", "OPTIONS"):
        return "get" if named else "list"
    if method == "POST":
        return "create"
    return {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
