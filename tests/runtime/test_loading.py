"""Handler folders that cannot be served fail at load time with the reason."""

from __future__ import annotations

import pytest

from gateway.runtime import HandlerLoadError, create_app
from gateway.runtime.loader import BodyKind, load_handler
from tests.runtime.conftest import FUNCTIONS


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import no_such_module_here\n", "ModuleNotFoundError: No module named"),
        ("x = 1\n", "defines no function handle()"),
        ("def handle(req):\n    return req\n", "first parameter 'req' is annotated None"),
        ("def handle(a: bytes, b, c):\n    pass\n", "takes 3 parameters"),
        ("def handle(a: int):\n    pass\n", "annotated <class 'int'>"),
        (
            "SUCCESS_STATUS = 404\ndef handle(a: bytes):\n    pass\n",
            "SUCCESS_STATUS must be an integer in 200-299, not 404",
        ),
        (
            "def handle(a: 'Undefined'):\n    pass\n",
            "cannot read handle()'s signature: name 'Undefined' is not defined",
        ),
    ],
)
def test_unservable_handler_is_refused_with_its_reason(write_handler, source, message):
    with pytest.raises(HandlerLoadError, match="handler.py") as caught:
        create_app(write_handler("bad", source), "bad")
    assert message in str(caught.value)


def test_missing_handler_file(tmp_path):
    with pytest.raises(HandlerLoadError, match=r"no handler\.py in"):
        load_handler(tmp_path, "empty")


@pytest.mark.parametrize(
    ("function", "kind", "model"),
    [
        ("echo", BodyKind.MODEL, "EchoRequest"),
        ("sleep", BodyKind.MODEL, "SleepRequest"),
        ("fail-n-times", BodyKind.MODEL, "FailRequest"),
        ("hello-python3-http", BodyKind.OPENFAAS_EVENT, None),
    ],
)
def test_repository_functions_load(function, kind, model):
    spec = load_handler(FUNCTIONS / function, function)
    assert spec.body_kind is kind
    assert (spec.request_model.__name__ if spec.request_model else None) == model
