"""Settings of the gateway, the local provider, the queue worker and the connector.

Read lazily from the environment (``MXT_*``, see docs/development.md), so tests and
the embedded stack set them per process without a ``.env`` file.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage.settings import default_data_dir


class GatewaySettings(BaseSettings):
    """Everything the gateway process and the queue worker read from the environment.

    Sizes are in bytes, durations in seconds.
    """

    model_config = SettingsConfigDict(env_prefix="MXT_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    nats_url: str = "nats://127.0.0.1:4222"
    secrets_dir: Path | None = None
    # folders (os.pathsep-separated) API deployments may take handlers from, besides
    # the folders of the stack file's own functions
    deploy_roots: str = ""
    # other origins (comma-separated, "https://ops.example.org") whose pages may send
    # state-changing requests; the gateway's own origin always may
    allowed_origins: str = ""
    gateway_url: str = "http://127.0.0.1:8080"
    stack_file: Path = Path("stack.yml")
    host: str = "127.0.0.1"
    port: int = 8080
    # sync request bodies above this are refused with 413
    max_body_bytes: int = 64 * 1024 * 1024
    # async bodies travel inside one NATS message (limit 1 MiB, base64 grows them by 4/3)
    max_async_body_bytes: int = 700 * 1024
    upstream_timeout: float = 60.0
    max_attempts: int = 5
    retry_base_delay: float = 0.5
    retry_max_delay: float = 60.0
    worker_concurrency: int = 64
    # false: this gateway only queues; separate `mxt worker` processes run the calls
    run_worker: bool = True
    # seconds an async call may take before the worker gives up on it (504, retried)
    async_timeout: float = 300.0
    dedupe_window: float = 600.0
    call_status_ttl: float = 7 * 24 * 3600.0
    lazy_start: bool = False
    start_timeout: float = 30.0
    # function processes starting at once; 0: four per CPU, at least 8 (measured with 40
    # functions on 2 cores: all at once 9.5 s to /healthz, 23 s all ready; 10 at once
    # 2.1 s and 18.8 s; 4 at once 1.4 s and 30 s)
    start_concurrency: int = 0
    log_lines: int = 2000
    # callbacks (X-Callback-Url) go to public addresses only, plus these comma-separated
    # patterns: names, *.example.org, addresses, CIDR blocks, each maybe with :port
    # (gateway/egress.py), e.g. "127.0.0.1/32,hooks.example.org:443"
    callback_allow: str = ""
    # seconds one callback attempt may take in all (connect, send, answer's headers)
    callback_timeout: float = 10.0
    # a function's log file (DATA_DIR/logs/<function>.log) is rotated past this many
    # bytes; log_file_backups older files are kept (<function>.log.1 the newest)
    log_file_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    log_file_backups: int = Field(default=3, ge=0)
    # bytes every JetStream stream of the platform may hold (the oldest messages go
    # first; MXT_ASYNC refuses new calls instead). nats-server reserves this much of its
    # store per stream when the stream is declared: six streams, 1.5 GiB by default
    stream_max_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    # largest message a stream accepts, in bytes (nats-server's default max_payload);
    # MXT_ASYNC and MXT_DLQ take at least a base64 async body of max_async_body_bytes
    stream_max_msg_bytes: int = Field(default=1024 * 1024, gt=0)
    # slots of the queue worker's lanes (gateway/lanes.py), "lane=count" comma-separated
    # over the defaults too=16, events=16, platform and public worker_concurrency each
    lane_slots: str = ""
    # calls of one function a lane runs at once; 0: half the lane's slots (at least 1)
    function_slots: int = Field(default=0, ge=0)
    # public async API (/async-function): calls per second each caller (user name, or
    # client address when anonymous) may queue on average, and in one burst; the
    # platform is never limited. async_rate 0: no limit
    async_rate: float = Field(default=20.0, ge=0)
    async_burst: int = Field(default=200, ge=1)

    @cached_property
    def secrets_path(self) -> Path:
        """The directory of secret files (``MXT_SECRETS_DIR`` or ``DATA_DIR/secrets``)."""
        return self.secrets_dir or self.data_dir / "secrets"

    @cached_property
    def allowed_origins_bytes(self) -> frozenset[bytes]:
        """:attr:`allowed_origins` as the bytes of an ``Origin`` header."""
        origins = (o.strip().rstrip("/") for o in self.allowed_origins.split(","))
        return frozenset(o.encode() for o in origins if o)

    @property
    def logs_dir(self) -> Path:
        """Where the function processes' captured output is written, one file each."""
        return self.data_dir / "logs"
