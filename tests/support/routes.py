"""Walk every route of a Tornado Application, for route-coverage tests of the auth rules.

    for route in iter_routes(app):
        for method in route.methods:
            ...request route.path with that method: 401 without credentials, 403 without the action...

`iter_routes` follows app.wildcard_router and app.default_router (host-specific rules included) and nested routers.
Each Route has a sample `path` that matches its pattern (regex groups filled with `sample`), the handler class, the
HTTP methods the handler implements, and whether the handler declares itself public (AuthMixin.public).
"""
try:
    from re import _parser as sre_parse  # Python 3.11+
except ImportError:                          # pragma: no cover - Python 3.10
    import sre_parse
from dataclasses import dataclass

import tornado.routing
import tornado.web

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass(frozen=True)
class Route:
    pattern: str
    path: str
    handler: type
    methods: tuple
    public: bool
    uses_auth_mixin: bool


def implemented_methods(handler):
    """Methods the handler class overrides from RequestHandler (the others answer 405 after auth)."""
    out = []
    for method in _METHODS:
        if method not in handler.SUPPORTED_METHODS:
            continue
        if getattr(handler, method.lower()) is not getattr(tornado.web.RequestHandler, method.lower()):
            out.append(method)
    return tuple(out)


def sample_path(regex):
    """A concrete path matching `regex` (compiled): free-text groups become `x`, digit classes `1`, optional parts
    are left out. Raises ValueError when the result does not match (pass the path in `samples` then)."""
    path = _render(sre_parse.parse(regex.pattern))
    if not regex.match(path):
        raise ValueError(f"cannot build a sample path for route {regex.pattern!r}; pass it in `samples`")
    return path


def _render(parsed):
    out = []
    for op, av in parsed:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(av))
        elif name == "NOT_LITERAL":
            out.append("y" if chr(av) == "x" else "x")
        elif name == "SUBPATTERN":
            out.append(_render(av[-1]))
        elif name == "IN":
            out.append(_class_char(av))
        elif name == "ANY":
            out.append("x")
        elif name in ("MAX_REPEAT", "MIN_REPEAT"):
            low, _high, item = av
            out.append(_render(item) * low)
        elif name == "BRANCH":
            out.append(_render(av[1][0]))
        elif name in ("AT", "ASSERT", "ASSERT_NOT"):
            continue
        else:
            raise ValueError(f"unsupported regex construct {name}")
    return "".join(out)


def _class_char(items):
    for op, av in items:
        name = str(op)
        if name == "NEGATE":
            return "x"
        if name == "LITERAL":
            return chr(av)
        if name == "RANGE":
            return chr(av[0])
        if name == "CATEGORY":
            return "1" if str(av) == "CATEGORY_DIGIT" else "x"
    return "x"


def _walk(rules, seen):
    for rule in rules:
        target = rule.target
        if isinstance(target, tornado.routing.Router) and hasattr(target, "rules"):
            if id(target) not in seen:
                seen.add(id(target))
                yield from _walk(target.rules, seen)
        elif isinstance(target, type) and issubclass(target, tornado.web.RequestHandler):
            yield rule


def iter_routes(app, *, samples=None, include_default_handler=False):
    """Every (Route) of `app`. `samples` maps a route pattern to the concrete path to use for it."""
    from foundry_inference.auth.tornado import AuthMixin

    samples = samples or {}
    seen = set()
    roots = [tornado.routing.Rule(tornado.routing.AnyMatches(), router)
             for router in (app.default_router, app.wildcard_router)]
    for rule in _walk(roots, seen):
        matcher = rule.matcher
        if not isinstance(matcher, tornado.routing.PathMatches):
            continue
        pattern = matcher.regex.pattern
        path = samples.get(pattern) or sample_path(matcher.regex)
        handler = rule.target
        yield Route(pattern=pattern, path=path, handler=handler, methods=implemented_methods(handler),
                    public=bool(getattr(handler, "public", False)), uses_auth_mixin=issubclass(handler, AuthMixin))
    default = app.settings.get("default_handler_class")
    if include_default_handler and default is not None:
        yield Route(pattern="<default>", path="/__no_such_route__", handler=default,
                    methods=implemented_methods(default), public=bool(getattr(default, "public", False)),
                    uses_auth_mixin=issubclass(default, AuthMixin))


PUBLIC_PATHS = frozenset({"/health", "/ready", "/healthz", "/readyz", "/v1/models"})


def route_coverage_failures(base_url, app, *, forbidden_headers, samples=None, public_paths=PUBLIC_PATHS,
                            timeout=10):
    """Request every route of `app` (served at `base_url`) with every implemented method and return a list of
    failures (empty = covered):
    - a non-public route must answer 401 with `WWW-Authenticate: Bearer` without credentials, and 403 with
      `forbidden_headers` (credentials that authenticate but lack the route's action);
    - every route's handler must use AuthMixin, and only `public_paths` may be public.
    """
    import requests

    failures = []
    for route in iter_routes(app, samples=samples):
        if not route.uses_auth_mixin:
            failures.append(f"{route.pattern}: {route.handler.__name__} does not use AuthMixin")
            continue
        if route.public:
            if route.path.rstrip("/") not in public_paths and route.path not in public_paths:
                failures.append(f"{route.pattern}: public, but not one of the declared public paths")
            continue
        for method in route.methods or ("GET",):
            url = base_url + route.path
            resp = requests.request(method, url, timeout=timeout)
            if resp.status_code != 401 or resp.headers.get("WWW-Authenticate") != "Bearer":
                failures.append(f"{method} {route.path}: without credentials got {resp.status_code}, wanted 401")
            resp = requests.request(method, url, headers=forbidden_headers, timeout=timeout)
            if resp.status_code != 403:
                failures.append(f"{method} {route.path}: without the action got {resp.status_code}, wanted 403")
    return failures
