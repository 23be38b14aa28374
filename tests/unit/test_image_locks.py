"""The images install locked Python requirements (docker/requirements/<image>.txt, made by scripts/lock-images.sh):
every package pinned to one version with the SHA-256 of its files, installed with `pip install --require-hashes`,
so a rebuild installs the same bytes or fails; the lock covers exactly the requirements setup.cfg gives the image
(install_requires + the image's extra), each pin inside setup.cfg's range; and the test cluster rebuilds an image
when its lock changes (the cache key includes it)."""
import configparser
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
IMAGES = {"platform": None, "predictive": "predictive", "chat": "chat"}      # Dockerfile -> setup.cfg extra
LINUX_CP311 = {"platform_system": "Linux", "sys_platform": "linux", "python_version": "3.11",
               "python_full_version": "3.11.2", "os_name": "posix", "platform_machine": "x86_64",
               "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def parse_lock(text):
    """{canonical name: (version, [hashes])}; a line that is not a hashed `name==version` pin fails."""
    pins = {}
    for entry in re.sub(r"\\\n\s*", " ", text).splitlines():
        entry = entry.split("#", 1)[0].strip()
        if not entry:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)(?:\s*;[^-]+?)?((?:\s+--hash=sha256:[0-9a-f]{64})+)", entry)
        assert match, f"not a hashed pin: {entry[:120]}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{name} pinned twice"
        pins[name] = (match.group(2), re.findall(r"sha256:([0-9a-f]{64})", match.group(3)))
    return pins


def _wanted(extra):
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    if extra:
        lines += cfg["options.extras_require"][extra].splitlines()
    reqs = [Requirement(line) for line in lines if line.strip()]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(LINUX_CP311)]


@pytest.mark.parametrize("image", IMAGES)
def test_every_requirement_of_the_image_is_pinned_in_range_with_hashes(image):
    pins = parse_lock((REPO / "docker" / "requirements" / f"{image}.txt").read_text())
    for req in _wanted(IMAGES[image]):
        name = canonicalize_name(req.name)
        assert name in pins, f"{image}: {req} is not in its lock (bash scripts/lock-images.sh {image})"
        version, hashes = pins[name]
        assert req.specifier.contains(version, prereleases=True), f"{image}: {name}=={version} outside {req}"
        assert hashes
    extra_in = REPO / "docker" / "requirements" / f"{image}.in"
    for line in (extra_in.read_text().splitlines() if extra_in.exists() else []):
        if line.strip() and not line.startswith("#"):
            assert canonicalize_name(Requirement(line).name) in pins


def test_each_lock_carries_only_its_image_runtimes():
    locks = {image: parse_lock((REPO / "docker" / "requirements" / f"{image}.txt").read_text()) for image in IMAGES}
    for heavy in ("onnxruntime", "onnxruntime-genai", "faster-whisper", "numpy", "pillow", "ctranslate2"):
        assert heavy not in locks["platform"], f"the platform image would carry {heavy}"
    assert {"onnxruntime", "pillow", "uvloop"} <= set(locks["predictive"])
    assert not {"onnxruntime-genai", "faster-whisper"} & set(locks["predictive"])
    assert {"onnxruntime", "onnxruntime-genai", "faster-whisper"} <= set(locks["chat"])
    assert "pillow" not in locks["chat"]
    shared = set(locks["platform"]) & set(locks["predictive"]) & set(locks["chat"])
    # one version of a package the images share (the platform's own requirements), whichever image it is in
    assert {n: locks["platform"][n][0] for n in shared} == {n: locks["chat"][n][0] for n in shared}


@pytest.mark.parametrize("image", IMAGES)
def test_the_dockerfile_installs_the_lock_with_hashes_and_nothing_unpinned(image):
    text = (REPO / "docker" / f"{image}.Dockerfile").read_text()
    assert f"COPY docker/requirements/{image}.txt /wheels/requirements.txt" in text
    installs = re.findall(r"pip install ([^\n\\&]*)", text)
    assert installs[0].split() == ["--no-cache-dir", "--require-hashes", "--no-deps", "-r", "/wheels/requirements.txt"]
    assert installs[1].split() == ["--no-cache-dir", "--no-deps", "/wheels/*.whl"]
    # anything else installed is the CUDA variant's runtime swap, inside its ACCELERATOR=cuda branch
    for extra in installs[2:]:
        assert "onnxruntime-gpu" in extra or "cuda" in extra, extra
    assert "pip check" in text                                  # the lock is complete: every dependency is in it


def test_the_cluster_image_cache_key_follows_the_lock(tmp_path, monkeypatch):
    from tests.kube import images
    (tmp_path / "docker" / "requirements").mkdir(parents=True)
    (tmp_path / "docker" / "chat.Dockerfile").write_text("FROM x\n")
    lock = tmp_path / "docker" / "requirements" / "chat.txt"
    lock.write_text("a==1 --hash=sha256:" + "0" * 64 + "\n")
    monkeypatch.setattr(images, "REPO", tmp_path)
    first = images.image_key("chat", "base", "sources")
    assert images.image_key("chat", "base", "sources") == first
    lock.write_text("a==2 --hash=sha256:" + "1" * 64 + "\n")
    assert images.image_key("chat", "base", "sources") != first
