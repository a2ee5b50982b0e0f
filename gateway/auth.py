"""Basic auth of the gateway: user ``admin``, password from the secret file.

OpenFaaS reads ``/var/openfaas/secrets/basic-auth-password``; we read
``<secrets dir>/basic-auth-password`` the same way (a file, never an environment variable).
"""

from __future__ import annotations

import base64
import hmac
import secrets
from pathlib import Path

ADMIN_USER = "admin"
PASSWORD_FILE = "basic-auth-password"


def password_path(secrets_dir: Path) -> Path:
    """Path of the gateway's basic-auth password file."""
    return secrets_dir / PASSWORD_FILE


def ensure_password(secrets_dir: Path) -> tuple[Path, bool]:
    """Create a random password on first start; keep an existing one.

    Returns
    -------
    path, created
        The password file and whether it was created now.
    """
    path = password_path(secrets_dir)
    if path.exists():
        return path, False
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(secrets.token_urlsafe(24))
    path.chmod(0o600)
    return path, True


def read_password(secrets_dir: Path) -> str:
    """The admin password (stripped of the trailing newline editors add)."""
    return password_path(secrets_dir).read_text().strip()


def basic_auth_header(password: str, user: str = ADMIN_USER) -> str:
    """The ``Authorization`` header value for ``user:password``."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Basic {token}"


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against one user and password.

    The comparison is constant-time over the whole expected header, so the
    response time tells nothing about how much of a guess was right.
    """

    def __init__(self, password: str, user: str = ADMIN_USER) -> None:
        self._expected = basic_auth_header(password, user).encode()

    def allows(self, header: bytes | str | None) -> bool:
        """Whether the raw ``Authorization`` header value grants access."""
        if not header:
            return False
        if isinstance(header, str):
            header = header.encode("latin-1", "replace")
        return hmac.compare_digest(header.strip(), self._expected)
