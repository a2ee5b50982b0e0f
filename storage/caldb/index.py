"""The CALDB index: ingest a calibration file, and select the best one like quzcif.

Ingest opens the FITS file, checks the CALDB keywords of every calibration
extension, stores the file under ``data/svom/mxt/bcf/<codename>/<file>`` in the
``caldb`` bucket and indexes each extension. Nothing is written when a check fails.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import AwareDatetime, Field, StringConstraints, field_validator
from sqlalchemy.orm import Session

from bricks.errors import BadInput, Conflict, NotFound, Unprocessable
from storage.caldb.boundaries import parse_boundary, parse_requirement, satisfies
from storage.db.base import utcnow
from storage.db.models import CalibrationDataset
from storage.objects import ObjectStore
from storage.schemas import RecordModel, RowId, ShortText, StrictModel, Text32

CALDB_BUCKET = "caldb"
KEY_ROOT = "data/svom/mxt"
REQUIRED_KEYWORDS = ("CCLS0001", "CCNM0001", "CDTP0001", "CVSD0001", "CVST0001", "CDES0001")
#: CALDB files are tables of a few MB; a bigger body is a mistake, in bytes
MAX_CALDB_FILE_BYTES = 256 * 1024 * 1024
FileName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
]
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^\d{2}:\d{2}:\d{2}(\.\d+)?$")


class DatasetRecord(RecordModel):
    """One indexed calibration extension."""

    id: int
    telescope: str
    instrument: str
    detector: str | None
    filter: str | None
    cal_class: str
    data_type: str
    codename: str
    valid_from: datetime
    description: str
    boundaries: list[dict[str, Any]]
    caldb_version: str
    ingested_at: datetime
    quality: int
    bucket: str
    key: str
    extension: int
    extname: str | None
    sha256: str
    size: int


class IngestResult(RecordModel):
    """What ingest stored: the object key and the indexed extensions."""

    key: str
    sha256: str
    size: int
    created: bool
    datasets: list[DatasetRecord]


# -- header checks --------------------------------------------------------------------
def _header_value(header: Any, primary: Any, name: str) -> Any:
    value = header.get(name)
    return primary.get(name) if value is None else value


def _valid_from(cvsd: str, cvst: str, where: str) -> datetime:
    if not _DATE.match(cvsd) or not _TIME.match(cvst):
        raise Unprocessable(
            f"{where}: CVSD0001 {cvsd!r} / CVST0001 {cvst!r} not YYYY-MM-DD / hh:mm:ss"
        )
    try:
        return datetime.fromisoformat(f"{cvsd}T{cvst}").replace(tzinfo=UTC)
    except ValueError as exc:
        raise Unprocessable(f"{where}: invalid validity start {cvsd} {cvst}: {exc}") from exc


def describe_extensions(data: bytes) -> list[dict[str, Any]]:
    """The index fields of every extension of a CALDB file given as bytes.

    Raises
    ------
    Unprocessable
        The file does not open as FITS, has no extension, or an extension lacks a
        CALDB keyword (the keyword and the HDU are named).
    """
    from astropy.io import fits

    from bricks.pipeline import check_fits_layout

    try:
        # astropy itself spins for ever on some hostile size cards (PCOUNT < 0)
        check_fits_layout("CALDB file", data)
    except Unprocessable as exc:
        raise Unprocessable(f"not a readable FITS file: {exc.reason}") from None
    try:
        with fits.open(io.BytesIO(data), memmap=False) as hdul:
            hdul.verify("exception")
            headers = [hdu.header.copy() for hdu in hdul]
            names = [hdu.name for hdu in hdul]
    except Exception as exc:  # astropy raises many kinds on corrupt files
        raise Unprocessable(f"not a readable FITS file: {exc}") from exc
    if len(headers) < 2:
        raise Unprocessable("no calibration extension: the file has only a primary HDU")
    return [
        _describe_extension(number, names[number], headers[number], headers[0])
        for number in range(1, len(headers))
    ]


def _describe_extension(number: int, name: str, header: Any, primary: Any) -> dict[str, Any]:
    where = f"HDU {number} ({name or 'unnamed'})"
    for keyword in (*REQUIRED_KEYWORDS, "CBD10001", "TELESCOP", "INSTRUME"):
        if _header_value(header, primary, keyword) is None:
            raise Unprocessable(
                f"{where}: missing CALDB keyword {keyword}", keyword=keyword, hdu=number
            )
    boundaries = []
    index = 1
    while (text := header.get(f"CBD{index}0001")) is not None:
        try:
            parsed = parse_boundary(str(text))
        except ValueError as exc:
            raise Unprocessable(f"{where}: CBD{index}0001: {exc}", hdu=number) from exc
        if parsed is not None:
            boundaries.append(parsed.model_dump())
        index += 1
    fields = {
        "telescope": str(_header_value(header, primary, "TELESCOP")).strip().upper(),
        "instrument": str(_header_value(header, primary, "INSTRUME")).strip().upper(),
        "detector": _optional(_header_value(header, primary, "DETNAM")),
        "filter": _optional(_header_value(header, primary, "FILTER")),
        "cal_class": str(header["CCLS0001"]).strip().upper(),
        "data_type": str(header["CDTP0001"]).strip().upper(),
        "codename": str(header["CCNM0001"]).strip().upper(),
        "valid_from": _valid_from(str(header["CVSD0001"]), str(header["CVST0001"]), where),
        "description": str(header["CDES0001"]),
        "boundaries": boundaries,
        "extension": number,
        "extname": name or None,
    }
    _check_lengths(fields, where)
    return fields


#: the header keyword each indexed text comes from, to name it in errors
_KEYWORD_OF = {
    "telescope": "TELESCOP",
    "instrument": "INSTRUME",
    "detector": "DETNAM",
    "filter": "FILTER",
    "cal_class": "CCLS0001",
    "data_type": "CDTP0001",
    "codename": "CCNM0001",
    "extname": "EXTNAME",
}


def _check_lengths(fields: dict[str, Any], where: str) -> None:
    """Header values longer than their index column are refused, naming the keyword."""
    columns = CalibrationDataset.__table__.columns
    for field, keyword in _KEYWORD_OF.items():
        value, limit = fields[field], columns[field].type.length
        if value is not None and len(value) > limit:
            raise Unprocessable(f"{where}: {keyword} longer than {limit} characters")


def _optional(value: Any) -> str | None:
    text = None if value is None else str(value).strip().upper()
    return None if text in (None, "", "NONE", "-") else text


# -- ingest ---------------------------------------------------------------------------
class IngestOptions(StrictModel):
    """Parameters of an ingest besides the file itself."""

    filename: FileName | None = None
    key: str | None = Field(default=None, max_length=1024, description="already in caldb")
    caldb_version: Text32 = "1"
    quality: int = Field(default=0, ge=0, le=5)


def caldb_key(codename: str, filename: str) -> str:
    """``data/svom/mxt/bcf/<codename>/<file>``, the CALDB directory layout."""
    return f"{KEY_ROOT}/bcf/{codename.lower()}/{filename}"


def ingest(
    session: Session, store: ObjectStore, data: bytes, options: IngestOptions
) -> IngestResult:
    """Validate, store and index a CALDB file; idempotent for the same bytes and name.

    Raises
    ------
    Unprocessable
        The file fails a check (nothing is stored).
    Conflict
        Another file already has this key: CALDB files are immutable, a new
        calibration gets a new file name.
    """
    if len(data) > MAX_CALDB_FILE_BYTES:
        from bricks.errors import PayloadTooLarge

        raise PayloadTooLarge(f"CALDB file larger than {MAX_CALDB_FILE_BYTES} bytes")
    extensions = describe_extensions(data)
    sha256 = hashlib.sha256(data).hexdigest()
    filename = options.filename or f"{extensions[0]['codename'].lower()}_{sha256[:12]}.fits"
    key = caldb_key(extensions[0]["codename"], filename)
    existing = session.scalars(
        sa.select(CalibrationDataset).where(CalibrationDataset.key == key)
    ).all()
    created = not existing
    if existing and existing[0].sha256 != sha256:
        raise Conflict(f"CALDB file {key} exists with other content; use a new file name")
    rows = list(existing)
    if created:
        store.put(CALDB_BUCKET, key, data, content_type="application/fits")
        now = utcnow()
        rows = [
            CalibrationDataset(
                **fields,
                caldb_version=options.caldb_version,
                ingested_at=now,
                quality=options.quality,
                bucket=CALDB_BUCKET,
                key=key,
                sha256=sha256,
                size=len(data),
            )
            for fields in extensions
        ]
        session.add_all(rows)
        session.flush()
    return IngestResult(
        key=key,
        sha256=sha256,
        size=len(data),
        created=created,
        datasets=[DatasetRecord.model_validate(row) for row in rows],
    )


def set_quality(session: Session, key: str, quality: int) -> int:
    """Set the quality flag (0 good, 5 bad) of every extension of a file; return how many."""
    if not 0 <= quality <= 5:
        raise BadInput("quality must be between 0 and 5")
    result = session.execute(
        sa.update(CalibrationDataset).where(CalibrationDataset.key == key).values(quality=quality)
    )
    if result.rowcount == 0:
        raise NotFound(f"CALDB file {key} is not indexed")
    return result.rowcount


# -- query ----------------------------------------------------------------------------
class CaldbQuery(StrictModel):
    """quzcif's parameters: ``date``/``time`` may be ``now``; ``-`` means any."""

    telescope: ShortText = "SVOM"
    instrument: ShortText = "MXT"
    detector: ShortText = "-"
    filter: ShortText = "-"
    codename: ShortText
    date: ShortText = "now"
    time: ShortText = "now"
    boundaries: list[ShortText] = Field(default_factory=list, max_length=16)
    #: ignore files ingested after this instant: reproduce an earlier CALDB state
    ingested_before: AwareDatetime | None = None
    #: return every matching extension, best first (quzcif's maxret), not only the best
    all: bool = False

    @field_validator("boundaries", mode="before")
    @classmethod
    def _one_boundary_as_list(cls, value: Any) -> Any:
        """A single query parameter arrives as a string."""
        return [value] if isinstance(value, str) else value


def query_time(date: str, time: str) -> datetime:
    """The instant a query asks about; ``now`` for either part means the current UTC."""
    now = datetime.now(UTC)
    day = now.strftime("%Y-%m-%d") if date.lower() == "now" else date
    clock = now.strftime("%H:%M:%S") if time.lower() == "now" else time
    if not _DATE.match(day):
        raise BadInput(f"date {date!r}: expected YYYY-MM-DD or 'now'")
    if not _TIME.match(clock):
        raise BadInput(f"time {time!r}: expected hh:mm:ss or 'now'")
    try:
        return datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=UTC)
    except ValueError as exc:
        raise BadInput(f"date/time {date} {time}: {exc}") from exc


def _matches_optional(column: Any, value: str) -> sa.ColumnElement[bool] | None:
    if value.strip() in ("-", ""):
        return None
    # a dataset without a detector/filter applies to all of them
    return sa.or_(column.is_(None), column == value.strip().upper())


def select_datasets(session: Session, request: CaldbQuery) -> list[DatasetRecord]:
    """The datasets quzcif would return, best first.

    Valid at the time (validity start ≤ time), quality 0, matching the boundaries;
    ordered by newest validity start, then newest ingest (the later file supersedes).
    """
    at = query_time(request.date, request.time)
    requirements = [parse_requirement(text) for text in request.boundaries]
    statement = sa.select(CalibrationDataset).where(
        CalibrationDataset.telescope == request.telescope.upper(),
        CalibrationDataset.instrument == request.instrument.upper(),
        CalibrationDataset.codename == request.codename.upper(),
        CalibrationDataset.valid_from <= at,
        CalibrationDataset.quality == 0,
    )
    for column, value in (
        (CalibrationDataset.detector, request.detector),
        (CalibrationDataset.filter, request.filter),
    ):
        condition = _matches_optional(column, value)
        if condition is not None:
            statement = statement.where(condition)
    if request.ingested_before is not None:
        statement = statement.where(CalibrationDataset.ingested_at < request.ingested_before)
    statement = statement.order_by(
        CalibrationDataset.valid_from.desc(),
        CalibrationDataset.ingested_at.desc(),
        CalibrationDataset.id.desc(),
    )
    return [
        DatasetRecord.model_validate(row)
        for row in session.scalars(statement)
        if satisfies(row.boundaries, requirements)
    ]


def best_dataset(session: Session, request: CaldbQuery) -> DatasetRecord:
    """The one dataset to use.

    Raises
    ------
    NotFound
        No dataset matches ("No datasets found matching selection criteria").
    """
    found = select_datasets(session, request)
    if not found:
        raise NotFound(
            f"no CALDB dataset matches codename {request.codename} for "
            f"{request.instrument} at {request.date} {request.time}"
            + (f" with {', '.join(request.boundaries)}" if request.boundaries else "")
        )
    return found[0]


class CaldbAnswer(RecordModel):
    """caldb-query's answer: the best file first (only it unless ``all``)."""

    files: list[DatasetRecord]


def answer_query(session: Session, request: CaldbQuery) -> CaldbAnswer:
    """The best dataset, or all matching ones best first when ``request.all``."""
    if request.all:
        return CaldbAnswer(files=select_datasets(session, request))
    return CaldbAnswer(files=[best_dataset(session, request)])


class CaldbListRequest(StrictModel):
    """Filters of the index listing."""

    codename: ShortText | None = None
    instrument: ShortText | None = None
    include_bad: bool = True
    limit: int = Field(default=100, ge=1, le=1000)
    after: RowId | None = None


def list_datasets(session: Session, request: CaldbListRequest) -> list[DatasetRecord]:
    """Index rows in id order, filtered, one page (continue with the last id)."""
    statement = sa.select(CalibrationDataset).order_by(CalibrationDataset.id)
    if request.codename:
        statement = statement.where(CalibrationDataset.codename == request.codename.upper())
    if request.instrument:
        statement = statement.where(CalibrationDataset.instrument == request.instrument.upper())
    if not request.include_bad:
        statement = statement.where(CalibrationDataset.quality == 0)
    if request.after is not None:
        statement = statement.where(CalibrationDataset.id > request.after)
    rows = session.scalars(statement.limit(request.limit))
    return [DatasetRecord.model_validate(row) for row in rows]


def dataset_for_key(session: Session, key: str) -> DatasetRecord:
    """The first indexed extension of the file ``key`` (to serve downloads of indexed files)."""
    row = session.scalar(
        sa.select(CalibrationDataset)
        .where(CalibrationDataset.key == key)
        .order_by(CalibrationDataset.extension)
    )
    if row is None:
        raise NotFound(f"CALDB file {key} is not indexed")
    return DatasetRecord.model_validate(row)


class QualityChange(StrictModel):
    """A new quality flag for every extension of an indexed file."""

    key: str = Field(max_length=1024)
    quality: int = Field(ge=0, le=5)


class CaldbPage(RecordModel):
    """One page of the index; ``next_after`` continues it."""

    datasets: list[DatasetRecord]
    next_after: int | None


def list_page(session: Session, request: CaldbListRequest) -> CaldbPage:
    """A page of :func:`list_datasets` with its continuation."""
    rows = list_datasets(session, request)
    more = len(rows) == request.limit
    return CaldbPage(datasets=rows, next_after=rows[-1].id if more and rows else None)


def ingest_stored(session: Session, store: ObjectStore, options: IngestOptions) -> IngestResult:
    """Ingest a file already uploaded to the caldb bucket under ``options.key``."""
    from bricks.errors import PayloadTooLarge
    from storage.keys import validate_key

    key = validate_key(options.key or "")
    if store.head(CALDB_BUCKET, key).size > MAX_CALDB_FILE_BYTES:
        raise PayloadTooLarge(f"CALDB file larger than {MAX_CALDB_FILE_BYTES} bytes")
    filename = options.filename or key.rsplit("/", 1)[-1]
    return ingest(
        session,
        store,
        store.get(CALDB_BUCKET, key),
        options.model_copy(update={"filename": filename}),
    )


def ingest_body(
    session: Session, store: ObjectStore, body: bytes, content_type: str, params: dict[str, Any]
) -> IngestResult:
    """caldb-ingest's request: FITS bytes with options as parameters, or JSON naming a key.

    Raises
    ------
    BadInput
        A parameter is invalid (named), or a JSON body lacks ``key``.
    """
    from storage.http import parse_params

    if content_type.split(";")[0].strip() == "application/json":
        try:
            document = json.loads(body or b"{}")
        except ValueError as exc:
            raise BadInput(f"request body is not JSON: {exc}", field="body") from exc
        if not isinstance(document, dict):
            raise BadInput("request body must be a JSON object", field="body")
        options = parse_params(IngestOptions, {**params, **document})
        if not options.key:
            raise BadInput("key: required with a JSON body (the object in the caldb bucket)")
        return ingest_stored(session, store, options)
    options = parse_params(IngestOptions, params)
    if options.key:
        raise BadInput("key: give either a FITS body or a key, not both")
    if not body:
        raise BadInput("body: empty; send the FITS file, or JSON naming a key")
    return ingest(session, store, body, options)
