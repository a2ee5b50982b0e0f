"""configdb: versioned programme configurations (pipeline DAG + parameters).

Versions are immutable; exactly one is active per programme; every activation is
kept in the history. Functions take a session and never commit.

What makes a configuration runnable (known bricks, every input produced by a needed
brick, parameters the bricks' models accept) is the orchestrator's ``build_dag``; the
storage layer cannot import it, so the configdb functions pass it in as the ``check`` of
:func:`check_programme`: a version it rejects is neither stored nor activated (422).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import AfterValidator, Field, StringConstraints, ValidationError, model_validator
from sqlalchemy.orm import Session

from bricks.errors import BadInput, Conflict, NotFound
from storage.db.base import utcnow
from storage.db.models import ActiveConfig, ConfigActivation, ProgrammeConfig
from storage.schemas import RecordModel, ShortText, StrictModel, Version

Programme = Literal["GP", "CP", "ToO"]
BrickName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
]
MAX_DAG_NODES = 64


def _plain_json(value: dict[str, Any]) -> dict[str, Any]:
    """Refuse what JSON cannot hold (NaN, dates from YAML), so storing never fails."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"must hold plain JSON values only: {exc}") from exc
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_plain_json)]


class DagNode(StrictModel):
    """One brick of a pipeline, the bricks it needs, and its parameters."""

    brick: BrickName
    needs: list[BrickName] = Field(default_factory=list, max_length=MAX_DAG_NODES)
    params: JsonObject = Field(default_factory=dict)


class ConfigSpec(StrictModel):
    """A programme configuration as written in ``programmes/*.yml`` or sent to configdb-put.

    ``version`` may be given to put an exact version (409 if it exists with other
    content); without it the next version number is used.
    """

    programme: Programme
    dag: list[DagNode] = Field(min_length=1, max_length=MAX_DAG_NODES)
    parameters: JsonObject = Field(default_factory=dict)
    comment: ShortText = ""
    version: Version | None = None
    activate: bool = False

    @model_validator(mode="after")
    def _dag_is_acyclic(self) -> ConfigSpec:
        check_dag(self.dag)
        return self


class ConfigRecord(RecordModel):
    """A stored version."""

    programme: str
    version: int
    dag: list[dict[str, Any]]
    parameters: dict[str, Any]
    comment: str
    created_at: datetime
    active: bool = False


class ActivationRecord(RecordModel):
    """One entry of the activation history."""

    programme: str
    version: int
    activated_at: datetime
    comment: str


def check_dag(dag: list[DagNode]) -> None:
    """Raise ValueError unless bricks are unique, needs exist, and there is no cycle."""
    names = [node.brick for node in dag]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"brick listed twice in dag: {', '.join(duplicates)}")
    known = set(names)
    for node in dag:
        missing = [n for n in node.needs if n not in known]
        if missing:
            raise ValueError(f"brick {node.brick!r} needs unknown brick(s): {', '.join(missing)}")
    remaining = {node.brick: set(node.needs) for node in dag}
    while remaining:
        ready = [b for b, needs in remaining.items() if not needs]
        if not ready:
            raise ValueError(f"dag has a cycle among: {', '.join(sorted(remaining))}")
        for brick in ready:
            del remaining[brick]
        for needs in remaining.values():
            needs.difference_update(ready)


class InvalidProgramme(BadInput):
    """A configuration the orchestrator could not run: unknown brick, an input no needed
    brick produces, parameters a model refuses (422, the reason naming brick and field)."""

    http_status = 422


#: what a runnable configuration must pass: raises ``BadInput`` naming the problem
#: (``gateway.orchestrator.programme.build_dag``)
ProgrammeCheck = Callable[["ConfigSpec"], object]


def check_programme(spec: ConfigSpec, check: ProgrammeCheck, refused: str) -> None:
    """Run ``check`` on ``spec``; ``InvalidProgramme`` saying what and ``refused`` if it fails.

    Parameters
    ----------
    refused
        What is therefore not done, for the reason ("not stored", "version 3 not activated").
    """
    try:
        check(spec)
    except BadInput as exc:
        reason = exc.reason
    except (ValueError, TypeError, KeyError) as exc:  # a model's own validator gone astray
        reason = f"programme {spec.programme}: {exc}"
    else:
        return
    raise InvalidProgramme(f"{reason}; {refused}", programme=spec.programme) from None


def stored_spec(record: ConfigRecord, refused: str) -> ConfigSpec:
    """The configuration of a stored version, as a spec (to check it again); ``refused``
    as for :func:`check_programme`.

    Raises
    ------
    InvalidProgramme
        The stored content is no longer a valid spec (stored before a rule existed).
    """
    try:
        return ConfigSpec.model_validate(
            {"programme": record.programme, "dag": record.dag, "parameters": record.parameters}
        )
    except ValidationError as exc:
        raise InvalidProgramme(
            f"programme {record.programme} version {record.version}: {_first_error(exc)}; "
            f"{refused}",
            programme=record.programme,
            version=record.version,
        ) from None


def content_hash(dag: list[dict[str, Any]], parameters: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a configuration's content."""
    canonical = json.dumps({"dag": dag, "parameters": parameters}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _record(session: Session, row: ProgrammeConfig) -> ConfigRecord:
    active_id = session.scalar(
        sa.select(ActiveConfig.config_id).where(ActiveConfig.programme == row.programme)
    )
    record = ConfigRecord.model_validate(row)
    record.active = active_id == row.id
    return record


def put_config(session: Session, spec: ConfigSpec) -> tuple[ConfigRecord, bool]:
    """Store a version (insert-or-get); return it and whether it was created.

    Without ``spec.version``, content identical to an existing version returns that
    version; with it, the version must be new or hold the same content.

    Raises
    ------
    Conflict
        ``spec.version`` exists with different content: versions are immutable.
    """
    dag = [node.model_dump() for node in spec.dag]
    digest = content_hash(dag, spec.parameters)
    existing = _find_existing(session, spec.programme, spec.version, digest)
    if existing is not None:
        if existing.content_sha256 != digest:
            raise Conflict(
                f"{spec.programme} version {spec.version} exists with other content; "
                "versions are immutable",
                programme=spec.programme,
                version=spec.version,
            )
        if spec.activate:
            activate(session, spec.programme, existing.version, spec.comment)
        return _record(session, existing), False
    latest = session.scalar(
        sa.select(sa.func.max(ProgrammeConfig.version)).where(
            ProgrammeConfig.programme == spec.programme
        )
    )
    row = ProgrammeConfig(
        programme=spec.programme,
        version=spec.version or (latest or 0) + 1,
        dag=dag,
        parameters=spec.parameters,
        content_sha256=digest,
        comment=spec.comment,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    if spec.activate:
        activate(session, spec.programme, row.version, spec.comment)
    return _record(session, row), True


def _find_existing(
    session: Session, programme: str, version: int | None, digest: str
) -> ProgrammeConfig | None:
    query = sa.select(ProgrammeConfig).where(ProgrammeConfig.programme == programme)
    if version is not None:
        return session.scalar(query.where(ProgrammeConfig.version == version))
    return session.scalar(
        query.where(ProgrammeConfig.content_sha256 == digest).order_by(
            ProgrammeConfig.version.desc()
        )
    )


def _get_row(session: Session, programme: str, version: int) -> ProgrammeConfig:
    row = session.scalar(
        sa.select(ProgrammeConfig).where(
            ProgrammeConfig.programme == programme, ProgrammeConfig.version == version
        )
    )
    if row is None:
        raise NotFound(f"{programme} configuration version {version} not found")
    return row


def get_config(session: Session, programme: str, version: int | None = None) -> ConfigRecord:
    """A version of a programme's configuration; the active one when ``version`` is None."""
    if version is not None:
        return _record(session, _get_row(session, programme, version))
    row = session.scalar(
        sa.select(ProgrammeConfig)
        .join(ActiveConfig, ActiveConfig.config_id == ProgrammeConfig.id)
        .where(ActiveConfig.programme == programme)
    )
    if row is None:
        raise NotFound(f"no active configuration for programme {programme}")
    return _record(session, row)


def activate(session: Session, programme: str, version: int, comment: str = "") -> ConfigRecord:
    """Make ``version`` the active one of ``programme`` and record it in the history."""
    row = _get_row(session, programme, version)
    now = utcnow()
    active = session.get(ActiveConfig, programme)
    if active is None:
        session.add(ActiveConfig(programme=programme, config_id=row.id, activated_at=now))
    elif active.config_id != row.id:
        active.config_id = row.id
        active.activated_at = now
    else:
        return _record(session, row)
    session.add(
        ConfigActivation(
            programme=programme,
            version=version,
            config_id=row.id,
            activated_at=now,
            comment=comment,
        )
    )
    session.flush()
    return _record(session, row)


def list_configs(session: Session, programme: str | None = None) -> list[ConfigRecord]:
    """Every stored version, by programme then version."""
    query = sa.select(ProgrammeConfig).order_by(ProgrammeConfig.programme, ProgrammeConfig.version)
    if programme is not None:
        query = query.where(ProgrammeConfig.programme == programme)
    return [_record(session, row) for row in session.scalars(query)]


def activation_history(session: Session, programme: str) -> list[ActivationRecord]:
    """Activations of a programme, oldest first."""
    rows = session.scalars(
        sa.select(ConfigActivation)
        .where(ConfigActivation.programme == programme)
        .order_by(ConfigActivation.id)
    )
    return [ActivationRecord.model_validate(row) for row in rows]


def load_yaml_specs(paths: Iterable[Path | str]) -> list[ConfigSpec]:
    """Programme configurations from YAML files (each may hold several documents).

    Raises
    ------
    BadInput
        A document is not a valid configuration; the file and the field are named.
    """
    import yaml

    specs = []
    for path in paths:
        try:
            documents = list(yaml.safe_load_all(Path(path).read_text()))
        except yaml.YAMLError as exc:
            raise BadInput(f"{path}: not valid YAML: {exc}") from exc
        for number, document in enumerate(documents):
            if document is None:
                continue
            try:
                specs.append(ConfigSpec.model_validate(document))
            except ValidationError as exc:
                raise BadInput(f"{path} document {number}: {_first_error(exc)}") from exc
    return specs


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "document"
    return f"{where}: {error['msg']}"


def seed(session: Session, specs: Iterable[ConfigSpec]) -> list[ConfigRecord]:
    """Put each configuration and activate it when it is new content.

    Seeding the same files twice changes nothing; editing a file adds a version
    and makes it active, the previous ones staying in the history.
    """
    records = []
    for spec in specs:
        seeded = spec.model_copy(update={"activate": False})
        record, created = put_config(session, seeded)
        has_active = session.get(ActiveConfig, spec.programme) is not None
        if created or not has_active:
            record = activate(session, spec.programme, record.version, "seeded")
        records.append(record)
    return records
