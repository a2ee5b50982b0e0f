"""The stack.yml loader: a valid file, the repository's own, and every error case."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.runtime.loader import load_handler
from gateway.stack import Route, StackError, load_stack, parse_routes, parse_topics
from tests.runtime.conftest import REPOSITORY

VALID = """
version: 1.0
provider:
  name: openfaas
  gateway: ${GATEWAY:-http://127.0.0.1:8080}
configuration:
  templates:
    - name: python3-mxt
      source: ./template/python3-mxt
  copy:
    - ./shared
functions:
  brick-screen:
    lang: python3-mxt
    handler: ./functions/screen
    image: ${REGISTRY}/brick-screen:${TAG:-latest}
    environment:
      write_timeout: 60s
      verbose: true
      retries: 3
    environment_file:
      - env.yml
    secrets: [s3-secret-key]
    labels:
      com.openfaas.scale.min: 2
      com.openfaas.scale.max: "5"
    annotations:
      topic: mxt.storage.raw, mxt.events.*.>
      com.mxt.routes: GET /mxt_configdb/programmes/{programme}; post /mxt_configdb/programmes
      com.mxt.write: "True"
    limits: {memory: 512Mi, cpu: "1"}
    requests: {memory: 128Mi, cpu: 100m}
    constraints: ["node.platform.os == linux"]
    readonly_root_filesystem: true
    build_args: {PYTHON_VERSION: 3.11}
  plain:
    lang: python3-mxt
    handler: functions/plain
"""


def write_stack(directory: Path, text: str, *, extra_files: bool = True) -> Path:
    """A stack file with its template, copy path and handler folders in ``directory``."""
    (directory / "template" / "python3-mxt").mkdir(parents=True)
    (directory / "shared").mkdir()
    for name in ("screen", "plain"):
        (directory / "functions" / name).mkdir(parents=True)
        (directory / "functions" / name / "handler.py").write_text("")
    if extra_files:
        (directory / "env.yml").write_text("environment:\n  write_timeout: 10s\n  region: eu\n")
    stack = directory / "stack.yml"
    stack.write_text(textwrap.dedent(text))
    return stack


def test_valid_stack_with_every_key(tmp_path):
    stack = load_stack(
        write_stack(tmp_path, VALID), environ={"REGISTRY": "ghcr.io/svom", "TAG": ""}
    )
    assert stack.provider.gateway == "http://127.0.0.1:8080"
    assert stack.configuration.copy_paths == ["./shared"]
    assert list(stack.functions) == ["brick-screen", "plain"]
    screen = stack.functions["brick-screen"]
    assert screen.name == "brick-screen"
    assert screen.image == "ghcr.io/svom/brick-screen:latest"
    assert screen.handler_dir == (tmp_path / "functions" / "screen").resolve()
    # environment_file first, inline environment overrides it
    assert screen.env == {
        "write_timeout": "60s",
        "region": "eu",
        "verbose": "true",
        "retries": "3",
    }
    assert screen.topics == ["mxt.storage.raw", "mxt.events.*.>"]
    assert screen.routes == [
        Route("GET", "/mxt_configdb/programmes/{programme}"),
        Route("POST", "/mxt_configdb/programmes"),
    ]
    assert screen.routes[0].parameters == ["programme"]
    assert screen.write_protected is True
    assert (screen.scale_min, screen.scale_max) == (2, 5)
    assert screen.limits.memory == "512Mi" and screen.requests.cpu == "100m"
    assert screen.build_args == {"PYTHON_VERSION": "3.11"}
    plain = stack.functions["plain"]
    assert (plain.topics, plain.routes, plain.write_protected) == ([], [], False)
    assert (plain.scale_min, plain.scale_max) == (1, 20)


@pytest.mark.parametrize("path", ["stack.yml", "tests/stack.yml"])
def test_repository_stacks_load_and_every_function_folder_serves(path):
    stack = load_stack(REPOSITORY / path)
    for name, function in stack.functions.items():
        assert function.handler_dir.is_dir(), name
        if function.lang in ("python3-mxt", "python3-http"):
            load_handler(function.handler_dir, name)


def test_test_functions_live_in_the_test_stack_only():
    production = load_stack(REPOSITORY / "stack.yml").functions
    tests = load_stack(REPOSITORY / "tests" / "stack.yml").functions
    assert set(tests) == {"echo", "sleep", "fail-n-times", "hello-python3-http"}
    assert not set(tests) & set(production)


def test_every_production_function_declares_its_access():
    """Who may call what is stated for each function, never left to the default."""
    functions = load_stack(REPOSITORY / "stack.yml").functions
    undeclared = [n for n, f in functions.items() if "com.mxt.access" not in f.annotations]
    assert undeclared == []
    internal = {n for n, f in functions.items() if f.annotations["com.mxt.access"] == "internal"}
    assert {"orchestrator-advance", "orchestrator-raw-arrived"} <= internal
    assert {n for n in functions if n.startswith("brick-")} <= internal


def _error(tmp_path: Path, text: str, **kwargs) -> StackError:
    with pytest.raises(StackError) as caught:
        load_stack(write_stack(tmp_path, text, **kwargs), environ={})
    return caught.value


MINIMAL = """
version: 1.0
provider: {name: openfaas}
configuration:
  templates: [{name: python3-mxt}]
functions:
  plain:
    lang: python3-mxt
    handler: ./functions/plain
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("handler: ./functions/plain", "handler: ./functions/plain\n    colour: red"),
            "function 'plain': unknown key 'colour'",
        ),
        (("functions:", "extras: 1\nfunctions:"), "unknown key 'extras'"),
        (
            ("handler: ./functions/plain", "handler: ./functions/plain\n    limits: {gpu: 1}"),
            "function 'plain': unknown key 'limits.gpu'",
        ),
        (
            (
                "handler: ./functions/plain",
                "handler: ./functions/plain\n    limits: {memory: lots}",
            ),
            "function 'plain': key 'limits.memory'",
        ),
        (("    handler: ./functions/plain\n", ""), "function 'plain': missing key 'handler'"),
        (("./functions/plain", "./functions/absent"), "function 'plain': key 'handler': folder"),
        (("version: 1.0", "version: 2.0"), "key 'version'"),
        (("name: openfaas", "name: lambda"), "key 'provider.name'"),
        (
            ("lang: python3-mxt", "lang: pyhton3-mxt"),
            "function 'plain': key 'lang': template 'pyhton3-mxt' is neither",
        ),
        (("  plain:", "  Plain_Fn:"), "function 'Plain_Fn': bad name"),
        (("  plain:", "  -plain:"), "function '-plain': bad name"),
        (("  plain:", "  " + "a" * 64 + ":"), "at most 63 characters"),
        (("functions:", "configuration2: {}\nfunctions:"), "unknown key 'configuration2'"),
    ],
)
def test_schema_error_names_function_and_key(tmp_path, change, message):
    old, new = change
    assert old in MINIMAL
    error = _error(tmp_path, MINIMAL.replace(old, new, 1))
    assert message in error.reason
    assert error.reason.startswith(str(tmp_path / "stack.yml"))


def test_missing_handler_file_for_a_python_function(tmp_path):
    stack = write_stack(tmp_path, MINIMAL)
    (tmp_path / "functions" / "plain" / "handler.py").unlink()
    with pytest.raises(StackError, match=r"function 'plain': key 'handler': .* has no handler\.py"):
        load_stack(stack, environ={})


def test_duplicate_function_names(tmp_path):
    text = MINIMAL + "  plain:\n    lang: python3-mxt\n    handler: ./functions/screen\n"
    error = _error(tmp_path, text)
    assert "key 'plain' appears twice" in error.reason
    assert "function names must be unique" in error.reason


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ("com.mxt.routes: FETCH /things", "method must be one of GET, POST"),
        ("com.mxt.routes: GET things", "path must start with '/'"),
        ("com.mxt.routes: GET /things/{id", "segment '{id' is neither"),
        ("com.mxt.routes: GET /a//b", "segment '' is neither"),
        ("com.mxt.routes: GET /a/{x}/{x}", "a parameter is repeated"),
        ("com.mxt.routes: GET /a; get /a", "lists 'get /a' twice"),
        ("topic: mxt..raw", "topic 'mxt..raw' is not a NATS subject"),
        ("topic: mxt.>.raw", "topic 'mxt.>.raw' is not a NATS subject"),
        ("topic: mxt raw", "topic 'mxt raw' is not a NATS subject"),
        ("com.mxt.write: maybe", "com.mxt.write must be 'true' or 'false', not 'maybe'"),
        (
            "com.mxt.topic-delivery: now",
            "com.mxt.topic-delivery must be one of queued, direct, not 'now'",
        ),
    ],
)
def test_bad_annotation_is_named(tmp_path, annotation, message):
    text = MINIMAL + f"    annotations:\n      {annotation}\n"
    error = _error(tmp_path, text)
    assert error.reason.count("function 'plain'") == 1
    assert message in error.reason


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ('{com.openfaas.scale.min: "two"}', "com.openfaas.scale.min must be a non-negative"),
        ("{com.openfaas.scale.min: -1}", "com.openfaas.scale.min must be a non-negative"),
        ("{com.openfaas.scale.min: 5, com.openfaas.scale.max: 2}", "need max ≥ 1 and min ≤ max"),
    ],
)
def test_bad_scale_labels(tmp_path, labels, message):
    error = _error(tmp_path, MINIMAL + f"    labels: {labels}\n")
    assert f"function 'plain': labels {message}" in error.reason or message in error.reason


def test_missing_copy_path_and_environment_file(tmp_path):
    text = MINIMAL.replace("functions:", "  copy: [./nowhere]\nfunctions:")
    text += "    environment_file: [missing.yml, bad.yml]\n"
    stack = write_stack(tmp_path, text)
    (tmp_path / "bad.yml").write_text("- a list\n")
    with pytest.raises(StackError) as caught:
        load_stack(stack, environ={})
    problems = caught.value.detail["problems"]
    assert problems[0] == f"configuration.copy: './nowhere' does not exist in {tmp_path}"
    assert "function 'plain': key 'environment_file': cannot read 'missing.yml'" in problems[1]
    assert problems[2] == (
        "function 'plain': key 'environment_file': 'bad.yml' has no 'environment' mapping "
        "at its top"
    )


def test_every_problem_is_reported_at_once(tmp_path):
    text = MINIMAL + "    annotations: {com.mxt.write: maybe}\n"
    text += "  Bad:\n    lang: python3-mxt\n    handler: ./functions/none\n"
    error = _error(tmp_path, text)
    assert len(error.detail["problems"]) == 3
    assert "function 'plain': com.mxt.write" in error.reason
    assert "function 'Bad': bad name" in error.reason
    assert "function 'Bad': key 'handler': folder" in error.reason


def test_yaml_syntax_error_and_missing_file(tmp_path):
    error = _error(tmp_path, "version: 1.0\nfunctions: [unclosed\n")
    assert "not valid YAML" in error.reason
    with pytest.raises(StackError, match="cannot read the stack file"):
        load_stack(tmp_path / "absent.yml")


def test_variable_substitution_like_faas_cli(tmp_path):
    text = MINIMAL.replace("handler: ./functions/plain", "handler: ./functions/${FN:-plain}")
    text += "    image: ${REGISTRY}/plain:${TAG:-dev}\n"
    stack = write_stack(tmp_path, text)
    defaults = load_stack(stack, environ={}).functions["plain"]
    chosen = load_stack(stack, environ={"REGISTRY": "r.io", "TAG": "v2", "FN": "screen"})
    assert defaults.image == "/plain:dev"
    assert chosen.functions["plain"].image == "r.io/plain:v2"
    assert chosen.functions["plain"].handler_dir.name == "screen"


def test_annotation_parsers_directly():
    assert parse_topics(" a.b ,c.* ") == ["a.b", "c.*"]
    assert parse_routes(" ; GET /x ;") == [Route("GET", "/x")]
