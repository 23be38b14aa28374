"""`foundry-inference models import DIR`: register Foundry catalog models from a folder, for sites without network
(`models push`, for a cluster's registry, is model_push.py).

DIR is one model folder (as our fetcher or Foundry Local leaves it: `genai_config.json`, the .onnx files, the
tokenizer, `inference_model.json`), a model's download folder (`<name>-<version>/v5/...`), or a whole Foundry Local
cache (`<publisher>/<name>-<version>/...`). Each model found is copied into the model cache (`<data-dir>/cache`,
the one every embedded fetcher shares, or `--cache DIR`) as verified content-addressed blobs, with a complete asset
index for `azureml://registries/azureml/models/<name>/versions/<version>` (azureml_fetch.py): a deployment of the
catalog variant with that URI then uses it without a single network request.

The model's id comes from its `inference_model.json` (`"Name": "<name>:<version>"`), else from the folder name
`<name>-<version>`, else from `--name` / `--version` (which also override both).
"""
import json
import os
import re
import shutil
import sys

from . import azureml, azureml_fetch
from .blobcache import BlobCache, format_size, sha256_file

_FOLDER = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)-(?P<version>[0-9]+)$")
_MODEL_FILES = ("genai_config.json", "inference_model.json")


class ImportError_(Exception):
    pass


def _is_model_folder(path):
    try:
        names = os.listdir(path)
    except OSError:
        return False
    return any(n in _MODEL_FILES or n.endswith(".onnx") for n in names)


def _name_from_metadata(folder):
    try:
        with open(os.path.join(folder, "inference_model.json")) as fh:
            name = json.load(fh).get("Name")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(name, str) and ":" in name:
        model, _, version = name.rpartition(":")
        return model, version
    return None


def find_models(root):
    """[(import root, model folder)]: the folder whose files are registered, and the model folder inside it."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise ImportError_(f"{root}: not a directory")
    found = []
    for current, dirs, _files in os.walk(root):
        dirs.sort()
        if _is_model_folder(current):
            base = current
            # a model folder inside its download folder (`<name>-<version>/v5/`): import the download folder
            parent = os.path.dirname(current)
            if current != root and parent.startswith(root) and _FOLDER.match(os.path.basename(parent)):
                base = parent
            found.append((base, current))
            dirs[:] = []                                   # nothing below a model folder is another model
    if not found:
        raise ImportError_(f"{root}: no model found (a model folder holds genai_config.json, inference_model.json or "
                           "an .onnx file)")
    return found


def identify(base, folder, name=None, version=None):
    meta = _name_from_metadata(folder)
    match = _FOLDER.match(os.path.basename(base))
    guess = meta or ((match.group("name"), match.group("version")) if match else (None, None))
    name, version = name or guess[0], version or guess[1]
    if not name or not version:
        raise ImportError_(f"{folder}: cannot tell the model's name and version (no inference_model.json, folder not "
                           "named <name>-<version>); pass --name and --version")
    try:
        return azureml.parse_uri(f"azureml://registries/azureml/models/{name}/versions/{version}")
    except azureml.FetchError:
        raise ImportError_(f"{name}:{version} is not a valid model name and version") from None


def import_model(cache, base, asset, log=print):
    """Copy every file under `base` (but `inference_model.json`) into the cache; write the asset's complete index."""
    files, total = {}, 0
    for current, dirs, names in os.walk(base):
        dirs.sort()
        for filename in sorted(names):
            path = os.path.join(current, filename)
            rel = os.path.relpath(path, base).replace(os.sep, "/")
            if filename.startswith(".") or rel.endswith("inference_model.json") or not os.path.isfile(path) or \
                    os.path.islink(path):
                continue
            azureml_fetch.check_name(rel)
            hexd = sha256_file(path).hexdigest()
            size = os.path.getsize(path)
            with cache.holding([hexd]):
                if not cache.verified(hexd):
                    tmp = f"{cache.blob(hexd)}.import-{os.getpid()}"
                    shutil.copyfile(path, tmp)
                    if sha256_file(tmp).hexdigest() != hexd:
                        os.unlink(tmp)
                        raise ImportError_(f"{path} changed while it was being imported")
                    os.replace(tmp, cache.blob(hexd))
            files[rel] = {"size": size, "etag": "", "sha256": hexd}
            total += size
    if not files:
        raise ImportError_(f"{base}: no files to import")
    azureml_fetch.write_index(cache, asset, {"uri": asset.uri, "description": "imported", "complete": True,
                                             "imported": True, "files": files})
    log(f"imported {asset.model_id}: {len(files)} files, {format_size(total)} -> {asset.uri}")
    return files


def add_parser(sub):
    models = sub.add_parser("models", help="manage the model cache (offline import)")
    verbs = models.add_subparsers(dest="verb", required=True, metavar="VERB")
    imp = verbs.add_parser("import", help="register model folders (or a Foundry Local cache) for offline use")
    imp.add_argument("dir", metavar="DIR", help="a model folder, a <name>-<version> folder, or a Foundry Local cache")
    imp.add_argument("--data-dir", help="embedded mode's data directory (its model cache is <data-dir>/cache)")
    imp.add_argument("--cache", help="the model cache directory itself (a node's FOUNDRY_FETCH_CACHE)")
    imp.add_argument("--name", help="the model name (default: from inference_model.json or the folder name)")
    imp.add_argument("--version", help="the model version (default: from inference_model.json or the folder name)")
    from . import model_push
    model_push.add_parser(verbs)


def main(args):
    if args.verb == "push":
        from . import model_push
        return model_push.main(args)
    from foundry_inference.store.factory import default_data_dir
    cache_dir = args.cache or os.path.join(args.data_dir or str(default_data_dir()), "cache")
    cache = BlobCache(cache_dir, log=print)
    try:
        found = find_models(args.dir)
        if (args.name or args.version) and len(found) > 1:
            raise ImportError_(f"{args.dir} holds {len(found)} models: --name/--version apply to one model only")
        for base, folder in found:
            asset = identify(base, folder, args.name, args.version)
            import_model(cache, base, asset)
            print(f"  deploy it with a catalog variant whose artifact uri is {asset.uri} (no network needed)")
    except (ImportError_, azureml.FetchError, OSError) as exc:
        print(f"foundry-inference models import: {exc}", file=sys.stderr)
        return 1
    return 0
