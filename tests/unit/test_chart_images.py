"""The images the chart and the operator reference exist as Dockerfiles in docker/, and every entrypoint they run
exists in the package: a `foundry-inference <subcommand>` is in foundry_inference/cli.py's COMPONENTS and parses,
a `python -m <module>` names an importable module. The images cannot be built here (no docker engine); this is what
can be checked without one."""
import configparser
import importlib.util
import json
import re
from pathlib import Path

import pytest

from foundry_inference import cli
from foundry_inference.operator import settings as operator_settings
from foundry_inference.operator.builders import deployment as builders
from tests.support import helm

pytestmark = pytest.mark.unit

REPO = helm.REPO
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
# optional images that run no entrypoint of their own package: the Debian nginx sidecar, and the samples image (the
# platform image plus the prepared samples, built from a context of its own, not the repository: docs/install.md)
OPTIONAL = {"nginx.Dockerfile", "samples.Dockerfile"}
PLATFORM_DOCKERFILES = [p for p in DOCKERFILES if p.name not in OPTIONAL]
THIRD_PARTY = {"nginxinc/nginx-unprivileged", "vllm/vllm-openai"}     # official upstream images


def _instructions(path):
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", Path(path).read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _image_names(path):
    return [m.group(1) for m in re.finditer(r"^# image: (\S+)", Path(path).read_text(), re.M)]


def _check_command(argv, where):
    """A container command of the platform: the console script and a known, parseable subcommand, or python -m."""
    if argv[:2] == ["python", "-m"] or argv[:2] == ["python3", "-m"]:
        module = argv[2]
        if module.startswith("vllm."):          # the upstream vLLM image's own module
            return
        assert importlib.util.find_spec(module) is not None, f"{where}: module {module} does not exist"
        return
    assert argv[0] == "foundry-inference", f"{where}: {argv}"
    sub = next(a for a in argv[1:] if not a.startswith("-"))
    assert sub in cli.COMPONENTS, f"{where}: `foundry-inference {sub}` is not a subcommand ({sorted(cli.COMPONENTS)})"
    cli.build_parser().parse_args(argv[1:])      # SystemExit on an unknown option
    module = cli.COMPONENTS[sub][0]
    assert importlib.util.find_spec(module) is not None, f"{where}: {module} (`{sub}`) is not in the package"


def _packaged(module):
    """Whether a wheel built from setup.cfg contains `module` (its package is listed under [options] packages)."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    packages = set(cfg["options"]["packages"].split())
    return module.rpartition(".")[0] in packages


def test_there_is_a_dockerfile_per_image_kind():
    assert {p.name for p in DOCKERFILES} >= {"platform.Dockerfile", "predictive.Dockerfile", "chat.Dockerfile"}


@pytest.mark.parametrize("path", PLATFORM_DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_entrypoint_exists_in_the_package(path):
    entry = [json.loads(args) for word, args in _instructions(path) if word == "ENTRYPOINT"]
    assert len(entry) == 1, f"{path.name}: one exec-form ENTRYPOINT"
    argv = entry[0]
    assert argv[0] == "foundry-inference"
    if len(argv) > 1:
        _check_command(argv, path.name)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_sources_exist_and_user_is_not_root(path):
    instructions = _instructions(path)
    for word, args in instructions:
        if word == "COPY" and "--from=" not in args and path.name != "samples.Dockerfile":
            *sources, _dest = args.split()
            for src in sources:
                assert (REPO / src).exists(), f"{path.name}: COPY {src}: not in the repository"
    users = [args for word, args in instructions if word == "USER"]
    if path.name == "samples.Dockerfile":          # FROM the platform image: its USER and ENV carry over
        assert not users and [a for w, a in instructions if w == "FROM"] == ["${PLATFORM}"]
        return
    assert users, f"{path.name}: no USER"
    uid = users[-1].split(":")[0]
    # numeric, so that runAsNonRoot can check it; the chart runs its pods as the same user
    assert uid.isdigit() and int(uid) == helm.chart_values()["podSecurity"]["runAsUser"]
    env = " ".join(args for word, args in instructions if word == "ENV")
    assert "PYTHONSAFEPATH=1" in env or path.name == "nginx.Dockerfile"


def test_the_console_script_is_declared():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    scripts = cfg["options.entry_points"]["console_scripts"]
    assert re.search(r"^foundry-inference = foundry_inference\.cli:main$", scripts, re.M)


@pytest.mark.parametrize("values", [{}] + [helm.load_values(p) for p in helm.CI_VALUES],
                         ids=["defaults"] + [p.name for p in helm.CI_VALUES])
def test_chart_commands_exist_in_the_package(values):
    out = helm.render(values)
    for dep in out.of_kind("Deployment"):
        for container in dep["spec"]["template"]["spec"]["containers"]:
            argv = container["command"] + container.get("args", [])
            _check_command(argv, f"{dep['metadata']['name']}/{container['name']}")


def test_operator_built_commands_exist_in_the_package():
    for argv in (builders.CHAT_COMMAND, builders.PREDICTIVE_COMMAND, builders.FETCH_COMMAND, builders.VLLM_COMMAND):
        _check_command(list(argv), "operator builders")


def _repository(ref):
    name = ref.rsplit("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return name


def test_every_image_the_chart_names_has_a_dockerfile_or_is_upstream():
    built = {name for path in DOCKERFILES for name in _image_names(path)}
    images = helm.chart_values()["images"]
    names = {images["platform"], *images["roles"].values()}
    for name in names:
        if "/" in name:
            assert _repository(name) in THIRD_PARTY, name
        else:
            assert name in built, f"image {name}: no Dockerfile in docker/ says `# image: {name}`"
    # and the operator's own defaults agree on the third-party images
    assert images["roles"]["nginx"] == operator_settings.DEFAULT_IMAGES["nginx"]
    assert images["roles"]["vllm_gpu"] == operator_settings.DEFAULT_IMAGES["vllm_gpu"]


def test_images_of_the_roles_run_the_right_server():
    """Chat roles use the chat image (its ENTRYPOINT is chat-server), predictive roles the predictive image."""
    by_image = {}
    for path in PLATFORM_DOCKERFILES:
        entry = next(json.loads(a) for w, a in _instructions(path) if w == "ENTRYPOINT")
        for name in _image_names(path):
            by_image[name] = entry
    roles = helm.chart_values()["images"]["roles"]
    for role, name in roles.items():
        if role.startswith("generative-"):
            assert by_image[name][1:] == ["chat-server"], role
        elif role.startswith("predictive-"):
            assert by_image[name][1:] == ["predictive-server"], role
    assert by_image[roles["model-fetcher"]] == ["foundry-inference"]     # runs `python -m ...fetch`


def test_image_entrypoint_modules_are_in_the_wheel():
    """The images install a wheel, not the source tree: every module they run must be in a listed package."""
    modules = {builders.FETCH_COMMAND[2]}
    for path in PLATFORM_DOCKERFILES:
        argv = next(json.loads(a) for w, a in _instructions(path) if w == "ENTRYPOINT")
        if len(argv) > 1:
            modules.add(cli.COMPONENTS[argv[1]][0])
    for argv in (builders.CHAT_COMMAND, builders.PREDICTIVE_COMMAND, ["foundry-inference", "operator"],
                 ["foundry-inference", "control-plane"]):
        modules.add(cli.COMPONENTS[argv[1]][0])
    missing = sorted(m for m in modules if not _packaged(m))
    assert missing == [], f"setup.cfg [options] packages lacks the packages of {missing}"
