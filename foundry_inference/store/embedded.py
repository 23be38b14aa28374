"""ResourceStore in one SQLite file, for a single machine without a cluster.

It keeps the apiserver semantics the platform relies on: resourceVersion (one global counter) with optimistic
concurrency, uid, creationTimestamp, generation bumped on spec change only, status written only through patch_status,
label selectors, opaque continue tokens, ownerReference cascade delete, and custom resources pruned, defaulted and
validated against the SAME CRD files the chart installs. Every write runs in `BEGIN IMMEDIATE`, so two processes
writing at once serialise and the loser of a race gets Conflict, never a lost update.
"""
import base64
import copy
import json
import os
import sqlite3
import threading
import time
import uuid

from foundry_inference.timefmt import now_rfc3339

from . import errors, objectmeta, selectors
from .base import ListResult, ResourceStore, merge_patch
from .kinds import kind_of

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    uid TEXT NOT NULL UNIQUE, rv INTEGER NOT NULL, labels TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name));
CREATE TABLE IF NOT EXISTS owners (
    owner_uid TEXT NOT NULL, child_uid TEXT NOT NULL, PRIMARY KEY (owner_uid, child_uid));
INSERT OR IGNORE INTO counters VALUES ('rv', 0);
"""
_MANAGED_META = ("uid", "resourceVersion", "creationTimestamp", "generation", "deletionTimestamp", "managedFields")


def _spec_part(obj):
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class EmbeddedStore(ResourceStore):
    def __init__(self, path, crd_schemas=None, continue_ttl=300.0):
        """`crd_schemas`: {kind name: CrdSchema}; custom kinds without one are refused (the CRD is not installed)."""
        self.path = os.fspath(path)
        self.schemas = dict(crd_schemas or {})
        self.continue_ttl = continue_ttl
        self._local = threading.local()
        db = self._db()
        try:
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise errors.Unavailable(f"embedded store unavailable: {exc}") from None

    @classmethod
    def with_chart_crds(cls, path, crd_dir=None, **kwargs):
        from .crds import crd_directory
        from .schema import CrdSchema, load_crds
        schemas = {}
        for crd in load_crds(crd_dir or crd_directory()).values():
            schema = CrdSchema(crd)
            schemas[schema.kind] = schema
        return cls(path, schemas, **kwargs)

    # --- connection and transactions -----------------------------------------------------------------------------
    def _db(self):
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA busy_timeout=30000")
            except (sqlite3.Error, OSError) as exc:
                raise errors.Unavailable(f"embedded store unavailable at {self.path}: {exc}") from None
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db, mode):
            self.db, self.mode = db, mode

        def __enter__(self):
            try:
                self.db.execute(f"BEGIN {self.mode}")
            except sqlite3.Error as exc:
                raise errors.Unavailable(f"embedded store unavailable: {exc}") from None
            return self.db

        def __exit__(self, typ, exc, tb):
            try:
                self.db.execute("COMMIT" if typ is None else "ROLLBACK")
            except sqlite3.Error as err:
                if typ is None:
                    self.db.execute("ROLLBACK")
                    raise errors.Unavailable(f"embedded store unavailable: {err}") from None
            if typ is not None and issubclass(typ, sqlite3.Error):
                raise errors.Unavailable(f"embedded store unavailable: {exc}") from None
            return False

    def _write(self):
        return self._Tx(self._db(), "IMMEDIATE")

    def _next_rv(self, db):
        db.execute("UPDATE counters SET value = value + 1 WHERE name = 'rv'")
        return db.execute("SELECT value FROM counters WHERE name = 'rv'").fetchone()[0]

    def _load(self, db, kind, namespace, name):
        row = db.execute("SELECT body FROM objects WHERE kind=? AND namespace=? AND name=?",
                         (kind, namespace or "", name)).fetchone()
        return json.loads(row[0]) if row else None

    def _store(self, db, k, obj, insert):
        meta = obj["metadata"]
        rv = self._next_rv(db)
        meta["resourceVersion"] = str(rv)
        row = (json.dumps(meta.get("labels") or {}), json.dumps(obj, separators=(",", ":")), rv)
        key = (k.kind, meta.get("namespace") or "", meta["name"])
        if insert:
            db.execute("INSERT INTO objects (labels, body, rv, kind, namespace, name, uid) VALUES (?,?,?,?,?,?,?)",
                       row + key + (meta["uid"],))
        else:
            db.execute("UPDATE objects SET labels=?, body=?, rv=? WHERE kind=? AND namespace=? AND name=?", row + key)
        db.execute("DELETE FROM owners WHERE child_uid=?", (meta["uid"],))
        db.executemany("INSERT OR IGNORE INTO owners VALUES (?, ?)",
                       [(ref["uid"], meta["uid"]) for ref in meta.get("ownerReferences") or []])
        return obj

    # --- admission: the checks kube-apiserver makes before it stores anything -------------------------------------
    def _admit(self, k, obj):
        meta = obj.get("metadata")
        causes = objectmeta.meta_causes(k.kind, k.namespaced, meta)
        name = meta.get("name") if isinstance(meta, dict) else None
        if k.kind == "Secret":
            causes += objectmeta.normalize_secret(obj)
        if k.custom:
            schema = self.schemas.get(k.kind)
            if schema is None:
                raise errors.NotFound(f"the server could not find the requested resource ({k.plural}): "
                                      f"CRD for {k.kind} is not installed")
            causes += schema.admit(obj)
        objectmeta.raise_if(causes, k.kind, name)

    def _prepare_new(self, obj):
        k = kind_of(obj)
        obj = copy.deepcopy(obj)
        obj["apiVersion"], obj["kind"] = k.api_version, k.kind
        meta = obj.setdefault("metadata", {})
        if isinstance(meta, dict):
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            for key in _MANAGED_META:
                meta.pop(key, None)
            if not k.namespaced:
                meta.pop("namespace", None)
        if k.status_subresource:
            obj.pop("status", None)
        self._admit(k, obj)
        return k, obj

    # --- the interface --------------------------------------------------------------------------------------------
    def get(self, kind, namespace, name):
        k = kind_of(kind)
        try:
            obj = self._load(self._db(), k.kind, namespace if k.namespaced else "", name)
        except sqlite3.Error as exc:
            raise errors.Unavailable(f"embedded store unavailable: {exc}") from None
        if obj is None:
            raise errors.NotFound(f'{k.plural} "{name}" not found')
        return obj

    def create(self, obj):
        k, obj = self._prepare_new(obj)
        meta = obj["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339())
        if k.custom or k.status_subresource:
            meta["generation"] = 1
        if k.status_subresource:
            obj["status"] = {}
        with self._write() as db:
            if self._load(db, k.kind, meta.get("namespace"), meta["name"]) is not None:
                raise errors.AlreadyExists(f'{k.plural} "{meta["name"]}" already exists')
            stored = self._store(db, k, obj, insert=True)
            owners = [ref.get("uid") for ref in meta.get("ownerReferences") or []]
            if owners and not db.execute(f"SELECT 1 FROM objects WHERE uid IN ({','.join('?' * len(owners))})",
                                         owners).fetchone():
                self._delete_tree(db, meta["uid"])   # every owner is gone: collected at once, as the GC would
            return stored

    def _update(self, k, namespace, name, mutate, expected_rv=None):
        """Read-modify-write inside one IMMEDIATE transaction; `mutate(current) -> new object`."""
        with self._write() as db:
            current = self._load(db, k.kind, namespace if k.namespaced else "", name)
            if current is None:
                raise errors.NotFound(f'{k.plural} "{name}" not found')
            if expected_rv is not None and str(expected_rv) != current["metadata"]["resourceVersion"]:
                raise errors.Conflict(f'Operation cannot be fulfilled on {k.plural} "{name}": the object has been '
                                      "modified; please apply your changes to the latest version and try again")
            new = mutate(copy.deepcopy(current))
            new["apiVersion"], new["kind"] = k.api_version, k.kind
            meta = new.setdefault("metadata", {})
            if not isinstance(meta, dict):
                objectmeta.raise_if([{"field": "metadata", "reason": "FieldValueTypeInvalid",
                                      "message": "must be an object"}], k.kind, name)
            if meta.get("name", name) != name or (k.namespaced and meta.get("namespace", namespace) != namespace):
                objectmeta.raise_if([{"field": "metadata.name", "reason": "FieldValueInvalid",
                                      "message": "name and namespace are immutable"}], k.kind, name)
            for key in _MANAGED_META:
                meta.pop(key, None)
                if key in current["metadata"]:
                    meta[key] = current["metadata"][key]
            meta["name"] = name
            if k.namespaced:
                meta["namespace"] = namespace
            self._admit(k, new)
            if "generation" in meta and _spec_part(new) != _spec_part(current):
                meta["generation"] = current["metadata"]["generation"] + 1
            if new == current:
                return current  # a no-op write does not bump resourceVersion, as on the apiserver
            return self._store(db, k, new, insert=False)

    def replace(self, obj):
        k = kind_of(obj)
        meta = obj.get("metadata") or {}
        if not meta.get("resourceVersion"):
            objectmeta.raise_if([{"field": "metadata.resourceVersion", "reason": "FieldValueRequired",
                                  "message": "required for optimistic concurrency"}], k.kind, meta.get("name"))
        if meta.get("uid"):
            current = self.get(k.kind, meta.get("namespace"), meta.get("name"))
            if current["metadata"]["uid"] != meta["uid"]:
                raise errors.Conflict(f"Precondition failed: UID in precondition: {meta['uid']}, "
                                      f"UID in object meta: {current['metadata']['uid']}")

        def mutate(current):
            new = copy.deepcopy(obj)
            if k.status_subresource:
                new["status"] = current.get("status", {})
            return new

        return self._update(k, meta.get("namespace"), meta.get("name"), mutate, expected_rv=meta["resourceVersion"])

    def patch(self, kind, namespace, name, patch):
        k = kind_of(kind)
        if not isinstance(patch, dict):
            raise errors.Invalid("a merge patch must be a JSON object")
        patch = {key: value for key, value in patch.items() if key != "status" or not k.status_subresource}
        expected = (patch.get("metadata") or {}).get("resourceVersion")
        return self._update(k, namespace, name, lambda current: merge_patch(current, patch), expected_rv=expected)

    def patch_status(self, kind, namespace, name, status_patch):
        k = kind_of(kind)

        def mutate(current):
            current["status"] = merge_patch(current.get("status") or {}, status_patch)
            return current

        return self._update(k, namespace, name, mutate)

    def delete(self, kind, namespace, name):
        k = kind_of(kind)
        with self._write() as db:
            obj = self._load(db, k.kind, namespace if k.namespaced else "", name)
            if obj is None:
                raise errors.NotFound(f'{k.plural} "{name}" not found')
            self._delete_tree(db, obj["metadata"]["uid"])

    def _delete_tree(self, db, uid):
        """Delete an object and, like the garbage collector, every dependent with no remaining owner."""
        self._next_rv(db)
        db.execute("DELETE FROM objects WHERE uid=?", (uid,))
        db.execute("DELETE FROM owners WHERE child_uid=?", (uid,))
        children = [r[0] for r in db.execute("SELECT child_uid FROM owners WHERE owner_uid=?", (uid,))]
        db.execute("DELETE FROM owners WHERE owner_uid=?", (uid,))
        for child in children:
            alive = db.execute("SELECT 1 FROM owners o JOIN objects x ON x.uid = o.owner_uid WHERE o.child_uid=?",
                               (child,)).fetchone()
            if not alive:
                self._delete_tree(db, child)

    # --- list with continue tokens ---------------------------------------------------------------------------------
    def _encode_token(self, namespace, name, rv):
        raw = json.dumps({"v": 1, "ns": namespace, "n": name, "rv": rv, "t": time.time()}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def _decode_token(self, token):
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            start = (str(data["ns"]), str(data["n"]))
            issued = float(data["t"])
            rv = int(data["rv"])
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            raise errors.Invalid("continue key is not valid: malformed token",
                                 [{"field": "continue", "reason": "FieldValueInvalid",
                                   "message": "the continue token is malformed"}]) from None
        if time.time() - issued > self.continue_ttl:
            raise errors.Gone("The provided continue parameter is too old; restart the list without it")
        return start, rv

    def list(self, kind, namespace=None, label_selector=None, limit=None, continue_token=None):
        k = kind_of(kind)
        requirements = selectors.parse(label_selector)
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise errors.Invalid("limit must be a non-negative integer",
                                 [{"field": "limit", "reason": "FieldValueInvalid", "message": "must be >= 0"}])
        start, list_rv = self._decode_token(continue_token) if continue_token else (("", ""), None)
        sql = "SELECT namespace, name, labels, body FROM objects WHERE kind=? AND (namespace, name) > (?, ?)"
        args = [k.kind, *start]
        if namespace is not None and k.namespaced:
            sql += " AND namespace=?"
            args.append(namespace)
        sql += " ORDER BY namespace, name"
        items, token = [], None
        try:
            db = self._db()
            with self._Tx(db, "DEFERRED"):
                rv = list_rv or db.execute("SELECT value FROM counters WHERE name='rv'").fetchone()[0]
                for _ns, _name, labels, body in db.execute(sql, args):
                    if requirements and not selectors.matches(requirements, json.loads(labels)):
                        continue
                    if limit and len(items) == limit:
                        last = items[-1]["metadata"]
                        token = self._encode_token(last.get("namespace") or "", last["name"], rv)
                        break
                    items.append(json.loads(body))
        except sqlite3.Error as exc:
            raise errors.Unavailable(f"embedded store unavailable: {exc}") from None
        return ListResult(items, token, str(rv))

    def ping(self):
        try:
            self._db().execute("SELECT value FROM counters WHERE name='rv'").fetchone()
        except sqlite3.Error as exc:
            raise errors.Unavailable(f"embedded store unavailable: {exc}") from None
        return f"sqlite {self.path}"

    def close(self):
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
