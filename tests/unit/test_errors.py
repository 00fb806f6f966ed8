from backends.errors import BackendUnavailable, ContextLengthExceeded, ModelNotFound, Overloaded, UnsupportedParameter
from server.http.errors import AuthenticationError, classify


def test_subclasses_map_through_the_mro() -> None:
    status, body, _ = classify(ContextLengthExceeded("too long", param="messages"))
    assert status == 400
    assert body == {
        "error": {
            "message": "too long",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    assert classify(UnsupportedParameter("x", param="n"))[1]["error"]["code"] == "unsupported_parameter"


def test_statuses_and_headers() -> None:
    assert classify(ModelNotFound("m"))[0] == 404
    status, body, headers = classify(Overloaded("busy", retry_after=2.4))
    assert (status, body["error"]["type"], headers) == (429, "rate_limit_error", {"Retry-After": "2"})
    assert classify(BackendUnavailable("down"))[0] == 503
    status, _, headers = classify(AuthenticationError("no"))
    assert (status, headers) == (401, {"WWW-Authenticate": "Bearer"})


def test_unknown_exceptions_leak_nothing() -> None:
    status, body, _ = classify(RuntimeError("/home/me/secret.py line 3"))
    assert status == 500
    assert "secret" not in body["error"]["message"]
