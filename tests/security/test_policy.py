"""The access policy and the credentials, unit by unit, and users managed on a live stack.

gateway/policy.py (levels, who may make which call, sub-paths), gateway/auth.py
(users file, scrypt, the platform token, secrets that must not be empty) and
``mxt users`` against a running gateway, which picks up a change without a restart.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bricks.errors import BadInput
from gateway.auth import (
    ANONYMOUS,
    PLATFORM,
    PLATFORM_TOKEN_FILE,
    Authenticator,
    Principal,
    Role,
    SecretError,
    UserEntry,
    basic_auth_header,
    ensure_password,
    ensure_secret,
    hash_password,
    parse_users,
    read_secret,
    verify_password,
    write_users,
)
from gateway.functions import FunctionSpec, filter_environment
from gateway.policy import Access, Level, parse_access, refusal, safe_subpath, system_level
from local.stack import EmbeddedStack, write_stack_file
from tests.gateway.conftest import function_entry, wait_for


@pytest.fixture()
def secrets_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    ensure_password(directory)
    ensure_secret(directory, PLATFORM_TOKEN_FILE)
    return directory


def basic(user: str, password: str) -> bytes:
    return basic_auth_header(password, user).encode()


# ------------------------------------------------------------------ the policy


@pytest.mark.parametrize(
    ("annotation", "write_flag", "expected"),
    [
        (None, False, Access(Level.INTERNAL, Level.INTERNAL)),
        (None, True, Access(Level.OPERATOR, Level.OPERATOR)),
        ("public", False, Access(Level.PUBLIC, Level.PUBLIC)),
        ("anonymous", False, Access(Level.PUBLIC, Level.PUBLIC)),
        ("internal", True, Access(Level.INTERNAL, Level.INTERNAL)),
        ("read=public, write=admin", False, Access(Level.PUBLIC, Level.ADMIN)),
        ("read=scientist", False, Access(Level.SCIENTIST, Level.OPERATOR)),
    ],
)
def test_access_annotations(annotation, write_flag, expected):
    assert parse_access(annotation, write_flag) == expected


@pytest.mark.parametrize("annotation", ["everyone", "read=public, read=admin", "read:public"])
def test_bad_access_annotations_are_refused_with_the_reason(annotation):
    with pytest.raises(BadInput, match="com.mxt.access"):
        parse_access(annotation)


def test_who_may_make_which_call():
    scientist, operator = Principal("s", Role.SCIENTIST), Principal("o", Role.OPERATOR)
    admin = Principal("a", Role.ADMIN)
    assert refusal(ANONYMOUS, Level.PUBLIC) is None
    assert refusal(ANONYMOUS, Level.SCIENTIST) == 401
    assert refusal(scientist, Level.SCIENTIST) is None
    assert refusal(scientist, Level.OPERATOR) == 403
    assert refusal(operator, Level.OPERATOR) is None
    assert refusal(operator, Level.ADMIN) == 403
    # internal: no user, however high, only the platform
    assert refusal(admin, Level.INTERNAL) == 403
    assert refusal(ANONYMOUS, Level.INTERNAL) == 401
    assert refusal(PLATFORM, Level.INTERNAL) is None


def test_the_gateways_own_api_rules():
    assert system_level("GET", "/healthz") is Level.PUBLIC
    assert system_level("GET", "/async-function/status/x-1") is Level.PUBLIC
    assert system_level("GET", "/system/whoami") is Level.SCIENTIST
    assert system_level("GET", "/system/functions") is Level.OPERATOR
    assert system_level("POST", "/system/dead-letters/c-1/redrive") is Level.OPERATOR
    for method, path in (("POST", "/system/functions"), ("DELETE", "/system/functions")):
        assert system_level(method, path) is Level.ADMIN
    assert system_level("POST", "/system/scale-function/echo") is Level.ADMIN
    assert system_level("POST", "/async-function/echo") is None  # the function's own access


@pytest.mark.parametrize(
    "path",
    [
        "../../system/functions",
        "/system/functions",
        "/",
        "a/../../b",
        "./x",
        "a//b",
        "%2e%2e/system",
        "%2E%2e/system",
        ".%2e/x",
        "%252e%252e/system",
        "a%2f..%2fb",
        "a\\..\\b",
        "a/%00/b",
        "a/\x01",
    ],
)
def test_climbing_sub_paths_are_refused(path):
    with pytest.raises(BadInput):
        safe_subpath(path)


@pytest.mark.parametrize(("path", "kept"), [("", ""), ("a/b", "a/b"), ("a%20b/c/", "a%20b/c/")])
def test_plain_sub_paths_pass_unchanged(path, kept):
    assert safe_subpath(path) == kept


# ------------------------------------------------------------------ credentials


def test_passwords_are_hashed_with_scrypt_and_verified():
    encoded = hash_password("correct horse battery")
    assert encoded.startswith("scrypt$") and "correct" not in encoded
    assert verify_password("correct horse battery", encoded)
    assert not verify_password("correct horse batterz", encoded)
    assert not verify_password("x", "scrypt$bad")
    assert hash_password("same") != hash_password("same")  # salted


def test_users_file_lines_are_checked():
    good = UserEntry("ada", Role.SCIENTIST, hash_password("p" * 12)).line()
    assert parse_users(f"# comment\n\n{good}\n")["ada"].role is Role.SCIENTIST
    for text, problem in (
        ("ada:scientist", "name:role:hash"),
        (f"Ada:{good.split(':', 1)[1]}", "bad user name"),
        ("ada:scientist:plaintext", "not an scrypt hash"),
        (good.replace("scientist", "root"), "unknown role"),
        (f"{good}\n{good}", "defined twice"),
        (good.replace("ada:", "admin:"), "defined twice"),
    ):
        with pytest.raises(SecretError, match=problem):
            parse_users(text)


def test_authenticator_knows_admin_users_and_the_platform(secrets_dir: Path):
    write_users(
        secrets_dir, {"ada": UserEntry("ada", Role.OPERATOR, hash_password("ada's password"))}
    )
    auth = Authenticator(secrets_dir)
    admin_password = (secrets_dir / "basic-auth-password").read_text().strip()
    assert auth.verify(basic("admin", admin_password)) == Principal("admin", Role.ADMIN)
    assert auth.verify(basic("ada", "ada's password")) == Principal("ada", Role.OPERATOR)
    assert auth.verify(basic("ada", "guess")) is None
    assert auth.verify(basic("nobody", "ada's password")) is None
    assert auth.verify(b"Bearer " + base64.b64encode(b"x")) is None
    assert auth.verify(b"Basic !!!not base64") is None
    # remembered for that exact header: the second look costs no scrypt
    assert auth.cached(basic("ada", "ada's password")) == (True, Principal("ada", Role.OPERATOR))
    token = (secrets_dir / PLATFORM_TOKEN_FILE).read_text()
    assert auth.is_platform(token) and not auth.is_platform(token[:-1]) and not auth.is_platform("")


def test_a_changed_users_file_takes_effect_and_a_broken_one_keeps_the_last(secrets_dir: Path):
    auth = Authenticator(secrets_dir)
    assert auth.verify(basic("bob", "bob's password")) is None
    bob = UserEntry("bob", Role.SCIENTIST, hash_password("bob's password"))
    write_users(secrets_dir, {"bob": bob})
    os.utime(secrets_dir / "users", (1, 1))  # a new modification time, whatever the clock
    auth.refresh()
    assert auth.verify(basic("bob", "bob's password")) == Principal("bob", Role.SCIENTIST)
    (secrets_dir / "users").write_text("bob:scientist:broken\n")
    auth.refresh()
    assert auth.reload_error is not None and "line 1" in auth.reload_error
    assert auth.verify(basic("bob", "bob's password")) == Principal("bob", Role.SCIENTIST)


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_a_missing_or_empty_secret_stops_the_process(secrets_dir: Path, content):
    path = secrets_dir / PLATFORM_TOKEN_FILE
    path.unlink()
    if content is not None:
        path.write_text(content)
    with pytest.raises(SecretError, match="missing" if content is None else "empty"):
        Authenticator(secrets_dir)
    # and ensure_secret does not paper over an empty one with a fresh random value
    if content is not None:
        assert ensure_secret(secrets_dir, PLATFORM_TOKEN_FILE)[1] is False
        with pytest.raises(SecretError):
            read_secret(secrets_dir, PLATFORM_TOKEN_FILE)


def test_secret_files_are_private(secrets_dir: Path):
    assert (secrets_dir.stat().st_mode & 0o777) == 0o700
    for name in ("basic-auth-password", PLATFORM_TOKEN_FILE):
        assert ((secrets_dir / name).stat().st_mode & 0o777) == 0o600
    write_users(secrets_dir, {})
    assert ((secrets_dir / "users").stat().st_mode & 0o777) == 0o600


# ------------------------------------------------------------------ deployments


def test_deployment_environment_cannot_take_the_platforms_variables():
    assert filter_environment({"MY_SETTING": "1", "MXT_MAX_BODY_BYTES": "10"})
    for name in ("LD_PRELOAD", "PYTHONPATH", "PATH", "MXT_SECRETS_DIR", "MXT_NATS_URL",
                 "mxt_data_dir", "BAD NAME"):  # fmt: skip
        with pytest.raises(BadInput, match=name.split()[0]):
            filter_environment({name: "x"})


def test_deployment_handlers_come_only_from_the_allowed_folders(tmp_path: Path):
    allowed = tmp_path / "functions"
    for folder in (allowed / "good", tmp_path / "evil"):
        folder.mkdir(parents=True)
        (folder / "handler.py").write_text("def handle(req):\n    return req\n")
    (allowed / "sneaky").symlink_to(tmp_path / "evil")

    def deploy(handler: Path) -> FunctionSpec:
        request = {"service": "d", "handler": str(handler)}
        return FunctionSpec.from_deploy_request(request, tmp_path, [allowed])

    assert deploy(allowed / "good").handler_path == (allowed / "good").resolve()
    for handler in (tmp_path / "evil", allowed / ".." / "evil", allowed / "sneaky", Path("/")):
        with pytest.raises(BadInput, match="outside the stack's function folders"):
            deploy(handler)


# ------------------------------------------------------------------ users on a live stack


@pytest.fixture(scope="module")
def users_stack(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("users-stack")
    stack_file = write_stack_file(
        root / "stack.yml",
        {"guarded": function_entry("echo", annotations={"com.mxt.access": "operator"})},
    )
    with EmbeddedStack(stack_file, root / "data") as stack:
        yield stack


def mxt(stack: EmbeddedStack, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MXT_SECRETS_DIR": str(stack.data_dir / "secrets"),
        "MXT_DATA_DIR": str(stack.data_dir),
        **extra_env,
    }
    return subprocess.run(
        [sys.executable, "-c", "from local.cli import main; main()", *args],
        env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def test_users_added_and_removed_with_the_cli_take_effect_without_restart(users_stack, tmp_path):
    url = users_stack.url + "/function/guarded"
    password_file = tmp_path / "pw"
    password_file.write_text("a long operator password\n")
    added = mxt(users_stack, "users", "add", "olga", "--role", "operator",
                "--password-file", str(password_file))  # fmt: skip
    assert added.returncode == 0, added.stderr
    olga = ("olga", "a long operator password")
    assert wait_for(lambda: httpx.post(url, json={"message": "hi"}, auth=olga).status_code == 200)
    whoami = httpx.get(users_stack.url + "/system/whoami", auth=olga).json()
    assert whoami == {"user": "olga", "role": "operator"}
    # the CLI as that user (MXT_USER, MXT_PASSWORD_FILE) rather than as the admin
    as_olga = {"MXT_USER": "olga", "MXT_PASSWORD_FILE": str(password_file)}
    invoked = mxt(users_stack, "invoke", "guarded", "--data", '{"message": "cli"}', **as_olga)
    assert invoked.returncode == 0 and "cli" in invoked.stdout, invoked.stderr
    wrong = mxt(users_stack, "invoke", "guarded", "--data", "{}", MXT_USER="olga",
                MXT_PASSWORD_FILE=str(tmp_path / "absent"))  # fmt: skip
    assert wrong.returncode != 0 and "401" in wrong.stderr
    # demoted to scientist: the same login is now too little for this function
    assert mxt(users_stack, "users", "add", "olga", "--role", "scientist",
               "--password-file", str(password_file)).returncode == 0  # fmt: skip
    assert wait_for(lambda: httpx.post(url, json={"message": "x"}, auth=olga).status_code == 403)
    listed = mxt(users_stack, "users", "list").stdout
    assert "olga" in listed and "scientist" in listed and "$" not in listed
    assert mxt(users_stack, "users", "remove", "olga").returncode == 0
    assert wait_for(lambda: httpx.post(url, json={"message": "x"}, auth=olga).status_code == 401)
    refused = mxt(users_stack, "users", "add", "admin", "--role", "operator")
    assert refused.returncode != 0 and "admin" in refused.stderr
    assert httpx.get(users_stack.url + "/healthz").status_code == 200
