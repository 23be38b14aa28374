"""The catalog mirror for air-gapped clusters (docs/catalog.md, "A catalog mirror on an air-gapped cluster"): with
`catalog.mirrorRegistry` set, every `azureml://registries/<r>/models/<name>/versions/<v>` variant is pulled as the
OCI artifact `<mirrorRegistry>/<mirrorRepositoryPrefix>/<r>/<name, lower case>:<v>` instead of from Azure, and
`foundry-inference models push --mirror` puts a model folder exactly there. One rule, no per-model table: the admin
pushes the models the site needs and the catalog stays as shipped.
"""
from . import azureml, names


class MirrorError(ValueError):
    pass


def repository(prefix, uri):
    """(repository, tag) of an azureml:// URI in the mirror; MirrorError when it has no valid OCI name."""
    try:
        asset = azureml.parse_uri(uri)
    except azureml.FetchError as exc:
        raise MirrorError(str(exc)) from None
    repo = f"{prefix.strip('/')}/{asset.registry.lower()}/{asset.name.lower()}"
    if not names.OCI_PATH.fullmatch(repo) or len(repo) > 255 or not names.OCI_TAG.fullmatch(asset.version):
        raise MirrorError(f"{uri} has no valid mirror name ({repo}:{asset.version} is not an OCI reference)")
    return repo, asset.version


def artifact(uri, catalog_settings):
    """The OCI artifact that replaces the azureml:// `uri` under a mirror, or None without one (or for another URI)."""
    mirror = catalog_settings.mirrorRegistry
    if not mirror or not str(uri).startswith("azureml:"):
        return None
    repo, tag = repository(catalog_settings.mirrorRepositoryPrefix, uri)
    return {"type": "oci", "registry": mirror.lower(), "repository": repo, "tag": tag, "mirrorOf": uri}
