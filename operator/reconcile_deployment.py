"""Reconcile one ModelDeployment or InferenceService: normalise and validate the spec, resolve the model, build the
desired children, write what differs, prune what is no longer desired, create the API keys once (with the other
children, before the Deployment, so that a pod never starts without them; never regenerated unless the Secret is
deleted), write status when it changed.

Errors: InvalidSpec / ResolutionError / a child refused by the apiserver / a name owned by someone else become
state Error with a condition, and the existing children are left as they are (a broken update does not take down a
running model). Anything temporary (Unavailable, Conflict) propagates to the loop, which backs off this object.
"""
import base64
import logging
import threading
from dataclasses import dataclass, field

from foundry_inference.store import errors

from . import apply, names, pod_status, reconcile_store
from . import spec as spec_mod
from . import status as status_mod
from .autoscale import params as scaling_params
from .builders import activator as activator_builder
from .builders import common, ingress, keys, nginx, service, tls
from .builders import deployment as deployment_builder
from .builders import model as model_builder
from .builders import store as store_builder
from .resolve import ResolutionError, resolve

log = logging.getLogger("foundry_inference.operator")


@dataclass
class Outcome:
    owner: spec_mod.Owner
    spec: spec_mod.DeploymentSpec = None
    resolved: object = None
    error: tuple = None            # (state, reason, message)
    error_stage: str = None        # spec | resolve | apply
    deployment: dict = None
    service: dict = None
    ingress: dict = None
    keys_secret: dict = None
    store_model: dict = None       # the StoreModel holding the model (storeModel.enabled)
    pod_conditions: list = field(default_factory=list)   # cluster: what the pods say (pod_status.conditions)
    fetching: bool = False         # a fetcher is running: its progress moves without any resourceVersion moving
    actions: list = field(default_factory=list)   # (action, kind, name)
    status_written: bool = False
    skipped: bool = False          # nothing moved since the last reconcile found it in order


@dataclass
class PassContext:
    """What every reconcile of one pass shares (read-only)."""
    catalog: object
    ca_cert: bytes
    ca_key: bytes
    now: object
    catalog_token: int = 0


def _mine(obj, owner):
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid") == owner.uid
    return False


def _uses(store_model, owner):
    return any(r.get("uid") == owner.uid for r in store_model["metadata"].get("ownerReferences") or [])


def _keep_scaled_replicas(children, autoscaling, current):
    """With spec.autoscaling the autoscaler owns the model Deployment's replicas (as an HPA does): keep its count,
    within the current bounds; the hash covers the initial count only, so a scaling decision is no spec change. The
    activator Deployment keeps its own single replica."""
    if current is None:
        return
    wanted = (current.get("spec") or {}).get("replicas")
    if wanted is None:
        return
    for child in children:
        if child["kind"] == "Deployment" and child["metadata"]["name"] == current["metadata"]["name"]:
            child["spec"]["replicas"] = autoscaling.clamp(wanted)


def fingerprint(obj, kids, snapshot, ctx):
    """Everything a reconcile reads, as resourceVersions: if none moved since a reconcile that found nothing to do,
    this one would find nothing either. The hour is in it so certificate expiry is still looked at regularly."""
    meta = obj["metadata"]
    ref = ((obj.get("spec") or {}).get("model") or {}).get("ref")
    model = snapshot.models_in(meta["namespace"]).get(ref) if ref else None
    return (meta.get("resourceVersion"), ctx.catalog_token, ctx.now.strftime("%Y%m%d%H"),
            (model or {}).get("metadata", {}).get("resourceVersion"),
            tuple(sorted((k, n, o["metadata"].get("resourceVersion")) for (k, n), o in kids.items())),
            tuple(sorted((n, o["metadata"].get("resourceVersion"))
                         for n, o in snapshot.store_models_in(meta["namespace"]).items())),
            tuple(sorted((p["metadata"]["name"], p["metadata"].get("resourceVersion"))
                         for p in snapshot.pods_of(meta["namespace"], meta["name"]))))


class DeploymentReconciler:
    def __init__(self, store, settings):
        self.store = store
        self.settings = settings
        self._quiet = {}          # uid -> fingerprint of the last reconcile that wrote nothing
        self._registering = set()  # (namespace, Model name) being lazily registered right now
        self._lock = threading.Lock()

    # --- desired state ---------------------------------------------------------------------------------------------
    def _tls(self, owner, spec, existing, ctx):
        """(Secret name to mount, desired TLS Secret or None, certificate bytes for the pod hash)."""
        if self.settings.tls.secretName:
            return self.settings.tls.secretName, None, self.settings.tls.secretName.encode()
        name = names.tls_secret(owner.name)
        dns = tls.service_dns_names(names.service(owner.name), owner.namespace, [spec.endpoint.get("host")])
        current = existing.get(("Secret", name))
        if current is not None and _mine(current, owner) and not tls.renewal_reason(
                current, dns, ctx.ca_cert, ctx.now, self.settings.tls.renewBeforeDays):
            data = current["data"]
            cert, key = base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])
        else:
            cert, key = tls.issue(ctx.ca_cert, ctx.ca_key, dns, ctx.now, self.settings.tls.certValidityDays)
        return name, tls.secret(owner, cert, key, ctx.ca_cert), cert

    def _endpoint_selector(self, owner, spec, existing):
        """The Service's pods: the model's, or its activator's while a scale-to-zero deployment has no ready replica
        (builders/service.py); only an activator Deployment that exists and is available is ever selected.

        Once a scale-to-zero deployment's Service exists, its selector is the autoscaler's (autoscale/cluster.py,
        one writer that switches it before its replicas-0 write): the reconcile keeps either of the two selectors it
        finds there (the activator's only while that activator is available), so a pass that read the Deployment
        before that write never points the Service back at pods that are going away."""
        params = scaling_params.resolve(spec.autoscaling, self.settings) if spec.autoscaling is not None else None
        activator = existing.get(("Deployment", names.activator(owner.name)))
        rule = service.endpoint_selector(owner.name, params, existing.get(("Deployment", owner.name)), activator)
        if self.settings.embedded or params is None or not params.scales_to_zero:
            return rule
        current = ((existing.get(("Service", names.service(owner.name))) or {}).get("spec") or {}).get("selector")
        if current == names.child_labels(owner.name) or (
                current == service.activator_selector(owner.name)
                and int(((activator or {}).get("status") or {}).get("availableReplicas") or 0) > 0):
            return current
        return rule

    def _activator(self, owner, spec, resolved, existing, tls_name, config_hash, auth_mode):
        """While minReplicas is 0 (cluster only): the Service `<name>-replicas` and, once it has its ClusterIP (the
        activator forwards to that address), the activator Deployment (builders/activator.py)."""
        if self.settings.embedded or spec.autoscaling is None or spec.autoscaling.min_replicas != 0:
            return []
        params = scaling_params.resolve(spec.autoscaling, self.settings)
        found = [activator_builder.replicas_service(owner)]
        current = existing.get(("Service", names.replicas_service(owner.name)))
        address = ((current or {}).get("spec") or {}).get("clusterIP")
        if address and address != "None":
            found.append(activator_builder.deployment(owner, spec, resolved, self.settings, params,
                                                      tls_secret_name=tls_name, config_hash=config_hash,
                                                      auth_mode=auth_mode, replicas_ip=address))
        return found     # without the address yet: the activator is made on the next pass

    def desired(self, owner, spec, resolved, existing, ctx, store=None, hold=False):
        """The desired children, hash-stamped, in apply order (config before the Deployment that mounts it).
        `store`: the Available StoreModel the pods mount; `hold`: the model cache is not ready yet, so the model
        Deployment is left out (an existing one is kept as it is, not pruned)."""
        auth_mode = self.settings.authentication.mode(spec.auth_enabled)
        tls_name, tls_secret, cert = self._tls(owner, spec, existing, ctx)
        config = nginx.configmap(owner, spec.port)
        config_hash = common.digest([config["data"], base64.b64encode(cert).decode()])
        children = [config] + ([tls_secret] if tls_secret else [])
        if not hold:
            children.append(deployment_builder.deployment(
                owner, spec, resolved, self.settings, tls_secret_name=tls_name, config_hash=config_hash,
                auth_mode=auth_mode, store=store))
        children.append(service.service(owner))      # hashed with the model pods' selector, routed below
        children += self._activator(owner, spec, resolved, existing, tls_name, config_hash, auth_mode)
        if spec.endpoint.get("enabled"):
            children.append(ingress.ingress(owner, spec.endpoint, self.settings))
        children = [common.with_hash(c) for c in children]
        # the selector is left out of the Service's hash: the autoscaler switches it, which is no drift
        routed = next(c for c in children if c["kind"] == "Service" and c["metadata"]["name"] ==
                      names.service(owner.name))
        routed["spec"]["selector"] = self._endpoint_selector(owner, spec, existing)
        if spec.autoscaling is not None:
            _keep_scaled_replicas(children, spec.autoscaling, existing.get(("Deployment", owner.name)))
        return children

    # --- the reconcile ---------------------------------------------------------------------------------------------
    def reconcile(self, obj, snapshot, ctx):
        """Reconcile one owner; skipped (an Outcome with nothing done) when no input moved since it was last
        found in order."""
        kids = snapshot.children_of(obj["metadata"]["namespace"], obj["metadata"]["name"])
        mark = fingerprint(obj, kids, snapshot, ctx)
        uid = obj["metadata"]["uid"]
        if self._quiet.get(uid) == mark:
            return Outcome(owner=spec_mod.Owner.of(obj), skipped=True)
        self._quiet.pop(uid, None)
        out = self._reconcile(obj, snapshot, ctx)
        conflict = out.error is not None and out.error[1] == "NameConflict"   # a foreign object may go unseen
        if not out.actions and not out.status_written and not conflict and not out.fetching:
            self._quiet[uid] = mark
        return out

    def forget_except(self, uids):
        for uid in [u for u in self._quiet if u not in uids]:
            del self._quiet[uid]

    def _reconcile(self, obj, snapshot, ctx):
        owner = spec_mod.Owner.of(obj)
        out = Outcome(owner=owner)
        existing = {k: v for k, v in snapshot.children_of(owner.namespace, owner.name).items() if _mine(v, owner)}
        out.deployment = existing.get(("Deployment", owner.name))
        out.service = existing.get(("Service", names.service(owner.name)))
        out.ingress = existing.get(("Ingress", owner.name))
        keys_obj = snapshot.children_of(owner.namespace, owner.name).get(("Secret", names.keys_secret(owner.name)))
        if keys_obj is not None and _mine(keys_obj, owner):
            out.keys_secret = keys_obj
        pods = snapshot.pods_of(owner.namespace, owner.name)
        if pods:
            out.pod_conditions = pod_status.conditions(pods, pod_status.log_reader(self.store))
            out.fetching = any("running" in (cs.get("state") or {}) for p in pods
                               for cs in (p.get("status") or {}).get("initContainerStatuses") or [])
        if obj["metadata"].get("deletionTimestamp"):
            return self._write_status(obj, out, ctx)
        try:
            out.spec = spec_mod.validate(spec_mod.normalise(obj))
        except spec_mod.InvalidSpec as exc:
            out.error, out.error_stage = ("Error", "InvalidSpec", str(exc)), "spec"
            return self._write_status(obj, out, ctx)
        except (KeyError, TypeError, ValueError) as exc:
            out.error, out.error_stage = ("Error", "InvalidSpec", f"spec: {exc}"), "spec"
            return self._write_status(obj, out, ctx)
        try:
            out.resolved = resolve(out.spec, self.settings, ctx.catalog, snapshot.models_in(owner.namespace))
        except ResolutionError as exc:
            out.error, out.error_stage = (exc.state, exc.reason, exc.message), "resolve"
            return self._write_status(obj, out, ctx)
        self._register_model(owner, out.resolved, snapshot)
        try:
            cached = self._use_store(owner, out, snapshot)
            if out.spec.auth_enabled:
                self._ensure_keys(owner, out, ctx)      # before the Deployment: its pods start with the keys mounted
            ready = reconcile_store.available(out.store_model)
            self._apply(owner, out, existing, ctx, store=out.store_model["metadata"]["name"] if ready else None,
                        hold=cached and not ready)
            if out.spec.auth_enabled and out.keys_secret is not None:
                self._nudge_pods(owner, out, pods)
        except apply.ForeignChild as exc:
            out.error, out.error_stage = ("Error", "NameConflict", str(exc)), "apply"
        except errors.Invalid as exc:
            out.error = ("Error", "ChildRejected", f"the store refused a child: {exc.message}")
            out.error_stage = "apply"
        return self._write_status(obj, out, ctx)

    def _register_model(self, owner, resolved, snapshot):
        if not (self.settings.catalog.lazyRegistrationEnabled and resolved.catalog_entry and not resolved.model_cr):
            return
        model = model_builder.catalog_model(owner.namespace, resolved.catalog_entry, resolved.catalog_variant)
        key = (owner.namespace, model["metadata"]["name"])
        with self._lock:           # one worker registers it; the others of this pass see it as done
            if key[1] in snapshot.models_in(owner.namespace) or key in self._registering:
                return
            self._registering.add(key)
        try:
            self.store.create(model)
            snapshot.models.setdefault(owner.namespace, {})[model["metadata"]["name"]] = model
        except errors.AlreadyExists:
            snapshot.models.setdefault(owner.namespace, {})[model["metadata"]["name"]] = model
        except errors.Invalid as exc:
            log.warning("lazy registration of %s refused: %s", model["metadata"]["name"], exc.message)
        finally:
            with self._lock:
                self._registering.discard(key)

    def _apply(self, owner, out, existing, ctx, store=None, hold=False):
        wanted = self.desired(owner, out.spec, out.resolved, existing, ctx, store, hold)
        keep = {(c["kind"], c["metadata"]["name"]) for c in wanted}
        keep.add(("Secret", names.keys_secret(owner.name)))      # keys outlive an auth switch-off: never pruned
        keep.add(("Deployment", owner.name))                      # held while the model cache fills
        for child in wanted:
            key = (child["kind"], child["metadata"]["name"])
            obj, action = apply.ensure(self.store, child, existing.get(key))
            if action != "unchanged":
                out.actions.append((action, *key))
            if child["kind"] == "Deployment" and key[1] == owner.name:
                out.deployment = obj
            elif child["kind"] == "Service" and key[1] == names.service(owner.name):
                out.service = obj            # the deployment's own Service, not `<name>-replicas`
            elif child["kind"] == "Ingress":
                out.ingress = obj
        for kind, name in apply.prune(self.store, owner, existing, keep):
            out.actions.append(("deleted", kind, name))
            if kind == "Ingress":
                out.ingress = None

    # --- the model cache (storeModel.enabled; builders/store.py) ---------------------------------------------------
    def _use_store(self, owner, out, snapshot):
        """Make sure the StoreModel of this deployment's model exists and names this deployment among its users;
        drop this deployment from the StoreModels it no longer uses. Returns whether the model comes from one; its
        progress or failure goes into out.pod_conditions while it is not Available."""
        cached = store_builder.cached(out.resolved, self.settings)
        wanted = store_builder.store_model(owner, out.resolved, self.settings) if cached else None
        name = wanted["metadata"]["name"] if wanted else None
        for other_name, other in list(snapshot.store_models_in(owner.namespace).items()):
            if other_name != name and _uses(other, owner):
                self._release(owner, other, out)
        if not cached:
            return False
        current = snapshot.store_models_in(owner.namespace).get(name)
        if current is None:
            try:
                current = self.store.create(wanted)
                out.actions.append(("created", "StoreModel", name))
            except errors.AlreadyExists:          # another deployment of this pass, or a list older than it
                current = self.store.get("StoreModel", owner.namespace, name)
        if not _uses(current, owner):
            refs = [*(current["metadata"].get("ownerReferences") or []), store_builder.user_ref(owner)]
            current = self.store.patch("StoreModel", owner.namespace, name, {"metadata": {
                "ownerReferences": refs, "resourceVersion": current["metadata"]["resourceVersion"]}})
            out.actions.append(("updated", "StoreModel", name))
        out.store_model = current
        out.pod_conditions = reconcile_store.conditions(current) + out.pod_conditions
        return True

    def _release(self, owner, store_model, out):
        """This deployment stopped using `store_model`: take its reference off; the last user deletes it."""
        meta = store_model["metadata"]
        refs = [r for r in meta.get("ownerReferences") or [] if r.get("uid") != owner.uid]
        try:
            if refs:
                self.store.patch("StoreModel", owner.namespace, meta["name"], {"metadata": {
                    "ownerReferences": refs, "resourceVersion": meta["resourceVersion"]}})
                out.actions.append(("updated", "StoreModel", meta["name"]))
            else:
                self.store.delete("StoreModel", owner.namespace, meta["name"])
                out.actions.append(("deleted", "StoreModel", meta["name"]))
        except errors.NotFound:
            pass

    def _nudge_pods(self, owner, out, pods):
        """Annotate the pods that started before the last key change (pod_status.stale_for_keys): the kubelet then
        refreshes their Secret volume at once and the server's key-file reload picks the new keys up."""
        patch = pod_status.keys_patch(out.keys_secret)
        for name in pod_status.stale_for_keys(pods, out.keys_secret):
            try:
                self.store.patch("Pod", owner.namespace, name, patch)
            except errors.NotFound:
                continue
            out.actions.append(("annotated", "Pod", name))

    def _ensure_keys(self, owner, out, ctx):
        """Create the keys Secret once (again only if someone deleted it); on an existing one repair only what is
        missing, never a value: a rotation by the control plane must survive every reconcile."""
        if out.keys_secret is not None:
            patch = keys.repair_patch(owner, out.keys_secret, ctx.now)
            if patch:
                out.keys_secret = self.store.patch("Secret", owner.namespace, out.keys_secret["metadata"]["name"],
                                                   patch)
                out.actions.append(("updated", "Secret", out.keys_secret["metadata"]["name"]))
            return
        name = names.keys_secret(owner.name)
        try:
            out.keys_secret = self.store.create(keys.secret(owner, ctx.now))
            out.actions.append(("created", "Secret", name))
        except errors.AlreadyExists:
            # created by an earlier attempt whose answer was lost (ours: use it, never overwrite it), or someone
            # else's Secret under our name: left untouched, the deployment is in Error (NameConflict)
            found = self.store.get("Secret", owner.namespace, name)
            if not _mine(found, owner):
                raise apply.ForeignChild(apply.foreign_message(found)) from None
            out.keys_secret = found
            self._ensure_keys(owner, out, ctx)

    def _write_status(self, obj, out, ctx):
        new = status_mod.compute(obj, out, self.settings, ctx.now)
        if status_mod.changed(obj.get("status"), new):
            meta = obj["metadata"]
            try:
                self.store.patch_status(obj["kind"], meta["namespace"], meta["name"], new)
                out.status_written = True
            except errors.NotFound:
                pass    # deleted meanwhile; garbage collection takes the children
        return out
