"""The OpenFaaS template, without Docker: a faas-cli-style build context, served by index.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.auth import (
    PLATFORM_TOKEN_FILE,
    ensure_secret,
    platform_headers,
    read_platform_token,
)
from gateway.stack import load_stack
from local.natsd import free_port
from tests.runtime.conftest import FUNCTIONS, REPOSITORY
from tests.runtime.test_process import _wait_healthy

TEMPLATE = REPOSITORY / "template" / "python3-mxt"


def build_context(destination: Path, handler: Path) -> Path:
    """Lay out a build context as ``faas-cli build`` does.

    The template's files, the handler folder overlaid on ``function/``, and
    ``configuration.copy`` paths copied into ``function/``.
    """
    shutil.copytree(TEMPLATE, destination)
    for entry in handler.iterdir():
        target = destination / "function" / entry.name
        (shutil.copytree if entry.is_dir() else shutil.copy)(entry, target)
    for extra in load_stack(REPOSITORY / "stack.yml").configuration.copy_paths:
        source = REPOSITORY / extra
        target = destination / "function" / Path(extra).name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    return destination


def test_template_yml_names_the_language_and_process():
    template = yaml.safe_load((TEMPLATE / "template.yml").read_text())
    assert template["language"] == "python3-mxt"
    assert template["fprocess"] == "python index.py"
    assert template["welcome_message"].strip()


def test_every_dockerfile_copy_source_is_in_the_build_context(tmp_path):
    context = build_context(tmp_path / "build" / "echo", FUNCTIONS / "echo")
    dockerfile = (context / "Dockerfile").read_text()
    sources = []
    for line in dockerfile.splitlines():
        match = re.match(r"^COPY\s+(?!--from)(?:--chown=\S+\s+)?(.+)$", line.strip())
        if match:
            sources += match.group(1).split()[:-1]
    assert "function/pyproject.toml" in sources and "function/gateway" in sources
    missing = [source for source in sources if not (context / source).exists()]
    assert missing == []
    assert re.search(r"^FROM .*ghcr\.io/openfaas/of-watchdog", dockerfile, re.M)
    assert re.search(r"^FROM .*python:\$\{PYTHON_VERSION\}", dockerfile, re.M)
    assert re.search(r"^USER app$", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and 'mode="http"' in dockerfile


@pytest.mark.parametrize("function", ["echo", "hello-python3-http"])
def test_index_py_serves_the_function_as_the_watchdog_starts_it(tmp_path, function):
    context = build_context(tmp_path / "build" / function, FUNCTIONS / function)
    port = free_port()
    secrets_dir = tmp_path / "secrets"  # as OpenFaaS mounts /var/openfaas/secrets
    ensure_secret(secrets_dir, PLATFORM_TOKEN_FILE)
    platform = platform_headers(read_platform_token(secrets_dir))
    environment = {
        **os.environ,
        "MXT_SECRETS_DIR": str(secrets_dir),
        "upstream_url": f"http://127.0.0.1:{port}",
        "HOSTNAME": f"{function}-7d9c8b6f4d-x2v9q",
    }
    process = subprocess.Popen(
        [sys.executable, "index.py"],
        cwd=context,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, process)
        health = httpx.get(f"{url}/_/health").json()
        if function == "echo":
            response = httpx.post(url, json={"message": "from the template"}, headers=platform)
            assert response.json()["message"] == "from the template"
        else:
            response = httpx.get(url, params={"name": "watchdog"}, headers=platform)
            assert response.json()["greeting"] == "Hello, watchdog!"
    finally:
        process.terminate()
        process.wait(30)
    # the pod name gives the function name when MXT_FUNCTION_NAME is not set
    assert health["function"] == function


def test_new_function_skeleton_is_a_servable_typed_handler():
    from gateway.runtime.loader import BodyKind, load_handler

    spec = load_handler(TEMPLATE / "function", "skeleton")
    assert spec.body_kind is BodyKind.MODEL and spec.response_model.__name__ == "Response"
