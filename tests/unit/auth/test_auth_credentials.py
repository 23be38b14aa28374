"""Header parsing: which credential a request carries, and the exact errors for everything else."""
import pytest
from tornado.httputil import HTTPHeaders

from foundry_inference.auth import credentials
from foundry_inference.auth.errors import AmbiguousAuth, InvalidApiKey, InvalidToken, MissingCredentials

pytestmark = pytest.mark.unit

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def extract(**headers):
    h = HTTPHeaders()
    for name, value in headers.items():
        for v in value if isinstance(value, list) else [value]:
            h.add(name.replace("_", "-"), v)
    return credentials.extract(h)


def test_bearer_key_api_key_and_legacy_header():
    assert extract(Authorization="Bearer k1") == credentials.Credential("api_key", "k1", "Authorization")
    assert extract(api_key="k2") == credentials.Credential("api_key", "k2", "Api-Key")
    assert extract(X_API_Key="k3") == credentials.Credential("api_key", "k3", "X-Api-Key")


def test_three_part_bearer_is_a_jwt_anything_else_a_key():
    assert extract(Authorization=f"Bearer {JWT}").kind == "jwt"
    assert extract(Authorization="bearer " + "f" * 64).kind == "api_key"       # rotated key: bare hex
    assert extract(Authorization="Bearer fndry-pk-abc").kind == "api_key"
    assert extract(Authorization="Bearer a.b").kind == "api_key"
    assert extract(Authorization="Bearer a..c").kind == "api_key"              # empty part: not a JWT


def test_header_names_are_case_insensitive_with_plain_dicts_too():
    assert credentials.extract({"API-KEY": "k"}).value == "k"
    assert credentials.extract({"authorization": "Bearer k"}).value == "k"
    assert credentials.extract({"x-api-key": "k"}).source == "X-Api-Key"


def test_missing():
    with pytest.raises(MissingCredentials):
        extract(Accept="application/json")


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer k", "api_key": "k"},
    {"Authorization": f"Bearer {JWT}", "X_API_Key": "k"},
    {"api_key": "k", "X_API_Key": "k"},
    {"api_key": ["k1", "k2"]},
    {"Authorization": ["Bearer k1", "Bearer k2"]},
])
def test_two_credentials_are_ambiguous_never_a_choice(headers):
    with pytest.raises(AmbiguousAuth) as err:
        extract(**headers)
    assert err.value.status == 400 and err.value.code == "ambiguous_auth"


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "", "Token abc"])
def test_malformed_authorization_is_invalid_token(value):
    with pytest.raises(InvalidToken):
        credentials.extract({"Authorization": value})


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_key_header_is_rejected_not_treated_as_absent(value):
    with pytest.raises(InvalidApiKey):
        credentials.extract({"api-key": value})


def test_oversized_values_are_401_not_500():
    with pytest.raises(InvalidApiKey):
        extract(api_key="k" * 100_000)
    with pytest.raises(InvalidApiKey):
        extract(Authorization="Bearer " + "k" * 100_000)
    with pytest.raises(InvalidToken):
        extract(Authorization="Bearer " + "a" * 50_000 + ".b." + "c" * 50_000)


def test_repr_never_shows_the_secret():
    cred = extract(api_key="super-secret-value")
    assert "super-secret-value" not in repr(cred)
