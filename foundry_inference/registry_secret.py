"""`foundry-inference registry-secret`: store the credentials of a private OCI registry as a Secret in the embedded
store, for bring-your-own models (`"credentials": {"secretRef": {"name": NAME}}`). On a cluster the same Secret is
made with `kubectl create secret generic NAME --from-literal=username=... --from-literal=password=...`.

The Secret must live in the namespace of the deployments that pull with it (the fetcher reads it there, as a pod's
secretKeyRef would): the operator namespace for models registered through the API (the default), the deployment's
own for inline `custom` models. The password is read from standard input (`--password-stdin`, as `docker login`
does), else from FOUNDRY_REGISTRY_PASSWORD, else prompted for on a terminal; it is never an argument (shell history,
`ps`). Safe while `up` runs: the store is shared, and a changed password reaches the next fetch attempt.
"""
import getpass
import os
import sys

from foundry_inference.config import ConfigurationError
from foundry_inference.store import errors
from foundry_inference.store.factory import default_data_dir, open_store
from foundry_inference.store.objectmeta import DNS_LABEL, DNS_SUBDOMAIN

PURPOSE_LABEL = "foundry.azure.com/purpose"
OPERATOR_NAMESPACE = "foundry-local-operator"


def add_parser(sub):
    p = sub.add_parser("registry-secret", help="store or delete private registry credentials (embedded mode)")
    p.add_argument("name", help="Secret name, referenced as credentials.secretRef.name")
    p.add_argument("--namespace", "-n", default=OPERATOR_NAMESPACE,
                   help="namespace of the deployments that pull with it (default: %(default)s, where models "
                        "registered through the API and their deployments live)")
    p.add_argument("--username", "-u", help="registry user name")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--delete", action="store_true", help="delete the Secret instead")
    p.add_argument("--data-dir", help="the data directory of `up` (default ~/.local/share/foundry-inference)")


def _password(args):
    if args.password_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    elif os.environ.get("FOUNDRY_REGISTRY_PASSWORD"):
        value = os.environ["FOUNDRY_REGISTRY_PASSWORD"]
    elif sys.stdin.isatty():
        value = getpass.getpass(f"password for {args.username}: ")
    else:
        raise ConfigurationError("no password: pass --password-stdin (and pipe it in) or set "
                                 "FOUNDRY_REGISTRY_PASSWORD")
    if not value:
        raise ConfigurationError("the password is empty")
    return value


def _check(args):
    if not DNS_SUBDOMAIN.match(args.name) or len(args.name) > 253:
        raise ConfigurationError(f"{args.name[:80]!r} is not a valid Secret name (lowercase RFC 1123)")
    if not DNS_LABEL.match(args.namespace) or len(args.namespace) > 63:
        raise ConfigurationError(f"{args.namespace[:80]!r} is not a valid namespace (lowercase RFC 1123 label)")
    if not args.delete:
        if not args.username or any(ch in args.username for ch in ":\r\n"):
            raise ConfigurationError("--username is required and may not contain ':' or line breaks")


def main(args):
    _check(args)
    password = None if args.delete else _password(args)
    store = open_store("embedded", data_dir=args.data_dir or default_data_dir())
    try:
        if args.delete:
            try:
                store.delete("Secret", args.namespace, args.name)
            except errors.NotFound:
                raise ConfigurationError(f"no Secret {args.namespace}/{args.name}") from None
            print(f"deleted Secret {args.namespace}/{args.name}")
            return 0
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
                  "metadata": {"name": args.name, "namespace": args.namespace,
                               "labels": {PURPOSE_LABEL: "registry-credentials"}},
                  "stringData": {"username": args.username, "password": password}}
        try:
            store.create(secret)
            verb = "created"
        except errors.AlreadyExists:
            current = store.get("Secret", args.namespace, args.name)
            secret["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            store.replace(secret)
            verb = "updated"
    finally:
        store.close()
    print(f"{verb} Secret {args.namespace}/{args.name}; reference it from a model or deployment in namespace "
          f"{args.namespace} with \"credentials\": {{\"secretRef\": {{\"name\": \"{args.name}\"}}}}")
    return 0
