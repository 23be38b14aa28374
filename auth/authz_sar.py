"""Kubernetes SubjectAccessReview backend: the apiserver's RBAC (and, on Arc-enabled clusters, Azure RBAC through the
cluster's authorization webhook) decides.

Mapping (documented in docs/security.md):
- control-plane actions -> resourceAttributes {group: foundrylocal.azure.com, resource: modeldeployments,
  namespace, name, verb}: deployments/read -> get (one object) / list (collection), deployments/write -> create
  (POST) / update (PUT) / patch (PATCH), deployments/delete -> delete. The verb hint on the Resource (set from the
  HTTP method by the Tornado adapter) wins when present.
- key actions -> subresource `keys` of the deployment: deployments/listKeys/action -> get,
  deployments/regenerateKey/action -> update (whatever the HTTP method), so `get modeldeployments` alone never
  yields a deployment's keys.
- data-plane actions -> the same group and resource with subresource `inference`, verb `create`, namespace/name of
  the deployment: granting `modeldeployments/inference` `create` on a deployment lets a caller use it.
The blocking kubernetes client call runs in a thread (never on the event loop).
"""
import asyncio
from concurrent.futures import ThreadPoolExecutor

from foundry_inference.auth import actions
from foundry_inference.auth.authz import BackendUnavailable

GROUP = "foundrylocal.azure.com"
RESOURCE = "modeldeployments"
DATA_SUBRESOURCE = "inference"
KEYS_SUBRESOURCE = "keys"
_KEY_VERBS = {actions.KEYS_LIST: "get", actions.KEYS_REGENERATE: "update"}
_EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="foundry-auth-sar")


def resource_attributes(action, resource):
    attrs = {"group": GROUP, "resource": RESOURCE}
    if resource.namespace:
        attrs["namespace"] = resource.namespace
    if resource.name:
        attrs["name"] = resource.name
    if actions.is_data_action(action):
        attrs.update(subresource=DATA_SUBRESOURCE, verb="create")
        return attrs
    if action in _KEY_VERBS:
        attrs.update(subresource=KEYS_SUBRESOURCE, verb=_KEY_VERBS[action])
        return attrs
    verb = resource.verb
    if verb is None:
        verb = {actions.DEPLOYMENTS_READ: "get" if resource.name else "list",
                actions.DEPLOYMENTS_WRITE: "update" if resource.name else "create",
                actions.DEPLOYMENTS_DELETE: "delete"}[action]
    attrs["verb"] = verb
    return attrs


def review_body(principal, action, resource):
    spec = {"user": principal.identity, "groups": list(principal.groups),
            "resourceAttributes": resource_attributes(action, resource)}
    if principal.tenant:
        spec["extra"] = {"oid": [principal.identity], "tid": [principal.tenant]}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


class SubjectAccessReviewBackend:
    def __init__(self, api_client, *, timeout_s=5.0):
        from kubernetes import client  # imported here: only this authorizer needs the kubernetes client
        self.api = client.AuthorizationV1Api(api_client)
        self.timeout_s = timeout_s

    @classmethod
    def from_kubeconfig(cls, kubeconfig=None, **kwargs):
        """In-cluster service account when no kubeconfig is given and we run in a pod, else the kubeconfig."""
        from kubernetes import client, config
        cfg = client.Configuration()
        if kubeconfig is None:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                config.load_kube_config(client_configuration=cfg)
        else:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        cfg.retries = 0
        return cls(client.ApiClient(cfg), **kwargs)

    def _review(self, body):
        from kubernetes.client.exceptions import ApiException
        try:
            result = self.api.create_subject_access_review(body, _request_timeout=self.timeout_s)
        except ApiException as exc:
            raise BackendUnavailable(f"SubjectAccessReview failed: HTTP {exc.status} {exc.reason}") from None
        except Exception as exc:  # noqa: BLE001 - urllib3 connection errors, timeouts, TLS failures
            raise BackendUnavailable(f"SubjectAccessReview failed: {type(exc).__name__}: {exc}") from None
        status = result.status
        return bool(status and status.allowed and not status.denied)

    async def check(self, principal, action, resource):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_EXECUTOR, self._review, review_body(principal, action, resource))
