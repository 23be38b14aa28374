"""Azure RBAC checkAccess authorizer against a LOCAL Tornado server that speaks the ARM contract.

ARM (management.azure.com) cannot be reached from the test machines, so `FakeArm` below implements
POST {scope}/providers/Microsoft.Authorization/checkaccess?api-version=2018-09-01-preview as Azure does for guard
(Azure Arc's authorization webhook): a bearer token for the platform's identity, a body with Subject/Actions/Resource,
and a JSON array of {actionId, accessDecision} back. The decisions come from a role-assignment table in the fake.
"""
import json

import pytest
import requests
import tornado.web

from foundry_inference.apps.base import BaseHandler
from foundry_inference.auth import actions
from foundry_inference.auth.service import AuthService
from foundry_inference.auth.settings import AuthSettings
from foundry_inference.auth.tornado import AuthMixin
from tests.support.oidc_issuer import LoopbackServer, OidcIssuer

pytestmark = pytest.mark.integration

SCOPE = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Kubernetes/connectedClusters/edge1"
ARM_TOKEN = "arm-token-for-the-platform"


class FakeArm:
    def __init__(self):
        self.assignments = {}        # object id -> set of allowed action ids
        self.requests = []
        self.status = 200
        app = tornado.web.Application([(r"(/subscriptions/.+)/providers/Microsoft\.Authorization/checkaccess",
                                         _CheckAccess, {"arm": self})])
        self.server = LoopbackServer(app)


class _CheckAccess(tornado.web.RequestHandler):
    def initialize(self, arm):
        self.arm = arm

    def post(self, scope):
        arm = self.arm
        body = json.loads(self.request.body)
        arm.requests.append({"scope": scope, "api_version": self.get_query_argument("api-version"),
                             "authorization": self.request.headers.get("Authorization"), "body": body})
        if self.request.headers.get("Authorization") != f"Bearer {ARM_TOKEN}":
            self.set_status(401)
            return self.finish({"error": {"code": "InvalidAuthenticationToken"}})
        if arm.status != 200:
            self.set_status(arm.status)
            return self.finish({"error": {"code": "Throttled"}})
        oid = body["Subject"]["Attributes"]["ObjectId"]
        granted = arm.assignments.get(oid, set())
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps([{"actionId": a["Id"], "isDataAction": a["IsDataAction"],
                                 "accessDecision": "Allowed" if a["Id"] in granted else "NotAllowed",
                                 "roleAssignment": None, "denyAssignment": None, "timeToLiveInMs": 300000}
                                for a in body["Actions"]]))


class Chat(AuthMixin, BaseHandler):
    def post(self):
        self.write_json({"oid": self.current_user.identity})


class Deployments(AuthMixin, BaseHandler):
    plane = "control"

    def get(self):
        self.write_json({"deployments": []})

    def delete(self):
        self.write_json({}, 202)


@pytest.fixture(scope="module")
def issuer():
    with OidcIssuer() as iss:
        yield iss


@pytest.fixture
def arm():
    fake = FakeArm()
    with fake.server:
        yield fake


@pytest.fixture
def server(issuer, arm, tmp_path):
    token_file = tmp_path / "arm-token"
    token_file.write_text(ARM_TOKEN + "\n")
    settings = AuthSettings(mode="entra", plane="data", tenant_id=issuer.tenant_id, client_id=issuer.client_id,
                            authority=issuer.authority, authz="azure", azure_endpoint=arm.server.url,
                            azure_scope=SCOPE, azure_token_file=str(token_file), http_timeout_s=2.0)
    app = tornado.web.Application([(r"/v1/chat/completions", Chat), (r"/api/v1/deployments", Deployments)],
                                  auth=AuthService.from_settings(settings))
    with LoopbackServer(app) as srv:
        yield srv


def call(server, issuer, oid, method="POST", path="/v1/chat/completions"):
    token = issuer.mint(oid=oid, groups=["grp-1"])
    return requests.request(method, server.url + path, headers={"Authorization": f"Bearer {token}"})


def test_allowed_and_denied_by_role_assignments(server, issuer, arm):
    arm.assignments["alice-oid"] = {actions.DATA_ACTION}
    assert call(server, issuer, "alice-oid").status_code == 200
    r = call(server, issuer, "bob-oid")
    assert r.status_code == 403 and r.json()["details"]["code"] == "insufficient_permissions"
    req = arm.requests[0]
    assert req["scope"] == SCOPE and req["api_version"] == "2018-09-01-preview"
    assert req["authorization"] == f"Bearer {ARM_TOKEN}"
    assert req["body"] == {"Subject": {"Attributes": {"ObjectId": "alice-oid", "Groups": ["grp-1"]}},
                           "Actions": [{"Id": actions.DATA_ACTION, "IsDataAction": True}],
                           "Resource": {"Id": SCOPE}}


def test_control_plane_actions_use_the_connected_cluster_form(server, issuer, arm):
    read = "Microsoft.Kubernetes/connectedClusters/foundrylocal.azure.com/modeldeployments/read"
    arm.assignments["ops-oid"] = {read}
    assert call(server, issuer, "ops-oid", "GET", "/api/v1/deployments").status_code == 200
    assert call(server, issuer, "ops-oid", "DELETE", "/api/v1/deployments").status_code == 403
    assert [r["body"]["Actions"][0]["Id"] for r in arm.requests] == [
        read, "Microsoft.Kubernetes/connectedClusters/foundrylocal.azure.com/modeldeployments/delete"]


def test_decisions_are_cached_per_identity(server, issuer, arm):
    arm.assignments["carol-oid"] = {actions.DATA_ACTION}
    for _ in range(5):
        assert call(server, issuer, "carol-oid").status_code == 200
    assert len(arm.requests) == 1
    arm.status = 503                      # ARM down: the cached decision keeps serving
    assert call(server, issuer, "carol-oid").status_code == 200
    r = call(server, issuer, "dave-oid")  # nothing cached for dave
    assert r.status_code == 503 and r.json()["details"]["code"] == "rbac_check_unavailable"


def test_arm_rejecting_our_token_is_503_not_allow(server, issuer, arm, tmp_path):
    arm.assignments["erin-oid"] = {actions.DATA_ACTION}
    (tmp_path / "arm-token").write_text("expired-token")
    r = call(server, issuer, "erin-oid")
    assert r.status_code == 503
