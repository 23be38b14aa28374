"""The `foundry-inference` console script: one subcommand per component (the same commands a pod runs)."""
import argparse
import importlib
import importlib.util
import sys

from foundry_inference import logs, registry_secret
from foundry_inference.config import ConfigurationError
from foundry_inference.operator import model_import

# subcommand -> (module with main(args), help). Components land one issue at a time; a subcommand whose module is
# not there yet says so and exits 2 rather than pretending to run.
COMPONENTS = {
    "up": ("foundry_inference.embedded", "run the whole platform on this machine (embedded mode)"),
    "control-plane": ("foundry_inference.apps.controlplane.app", "run the control plane REST API (port 8080)"),
    "operator": ("foundry_inference.operator.main", "run the polling operator"),
    "predictive-server": ("foundry_inference.apps.predictive.server", "serve one ONNX model (port 8000)"),
    "chat-server": ("foundry_inference.apps.chat.server", "serve one generative model, OpenAI-compatible (port 5000)"),
    "registry-secret": ("foundry_inference.registry_secret", "store private registry credentials (embedded mode)"),
    "auth-proxy": ("foundry_inference.apps.authproxy", "API-key/Entra check in front of a vLLM server (in its pod)"),
    "activator": ("foundry_inference.operator.autoscale.cluster_activator",
                  "answer a scale-to-zero deployment's endpoint while it has no replica (in its activator pod)"),
    "models": ("foundry_inference.operator.model_import", "offline models: `models import DIR`, `models push DIR REF`"),
}


# subcommand -> (extra, the modules it installs): a command whose extra is missing says so instead of a traceback
EXTRAS = {
    "predictive-server": ("predictive", ("onnxruntime", "numpy")),
    "chat-server": ("chat", ("onnxruntime_genai", "faster_whisper", "numpy", "jinja2")),
    "up": ("all", ("onnxruntime", "numpy", "onnxruntime_genai", "faster_whisper", "jinja2")),
}


def missing_extra(command):
    """None, or the message naming the extra `command` needs and the module that is missing."""
    extra, modules = EXTRAS.get(command, (None, ()))
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return (f"foundry-inference {command}: needs the `{extra}` extra (pip install "
                    f"'foundry-inference[{extra}]'); module {module} is missing")
    return None


def _store_options(parser, default="kubernetes"):
    parser.add_argument("--store", choices=["kubernetes", "embedded"], default=default,
                        help="where resources live (default: %(default)s)")
    parser.add_argument("--data-dir", help="embedded store and cache directory (default ~/.local/share/...)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)")


def build_parser():
    parser = argparse.ArgumentParser(prog="foundry-inference", description=__doc__)
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default: info")
    parser.add_argument("--log-format", choices=list(logs.FORMATS),
                        help="auto (default: readable text on a terminal, JSON lines otherwise), json or text "
                             "(FOUNDRY_LOG_FORMAT)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help=COMPONENTS["up"][1])
    up.add_argument("--data-dir", help="state, models and keys (default ~/.local/share/foundry-inference)")
    up.add_argument("--port", type=int, default=8080)
    up.add_argument("--address", default="127.0.0.1")
    up.add_argument("--model-cache-limit", metavar="SIZE",
                    help="limit of the shared model download cache <data-dir>/cache, e.g. 20Gi or 500Mi "
                         "(default: FOUNDRY_MODEL_CACHE_LIMIT, else no limit)")
    up.add_argument("--allow-plain-http", action="store_true",
                    help="without nginx, serve deployments over plain HTTP on 127.0.0.1 (no TLS sidecar); without "
                         "this flag `up` refuses to start when nginx is missing")
    up.add_argument("--deploy-sample", metavar="ALIAS", help="deploy this sample (iris-classifier) once, check that it "
                                                             "answers, and log how to call it")
    cp = sub.add_parser("control-plane", help=COMPONENTS["control-plane"][1])
    cp.add_argument("--port", type=int, default=8080)
    cp.add_argument("--address", default="0.0.0.0")
    _store_options(cp)
    op = sub.add_parser("operator", help=COMPONENTS["operator"][1])
    _store_options(op)
    registry_secret.add_parser(sub)
    model_import.add_parser(sub)
    for name in ("predictive-server", "chat-server", "auth-proxy"):
        server = sub.add_parser(name, help=COMPONENTS[name][1])
        server.add_argument("--port", type=int, help="default from the environment, as in a pod")
        server.add_argument("--address", default=None)
    activator = sub.add_parser("activator", help=COMPONENTS["activator"][1])
    activator.add_argument("--port", type=int, help="default from the environment (PORT), as in its pod")
    activator.add_argument("--address", default=None)
    activator.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    module_name = COMPONENTS[args.command][0]
    problem = missing_extra(args.command)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"foundry-inference {args.command}: this component is not part of this build yet", file=sys.stderr)
            return 2
        raise
    try:
        return module.main(args) or 0
    except ConfigurationError as exc:
        print(f"foundry-inference {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
