"""CALDB ingest and quzcif-like selection on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bricks.errors import BadInput, Conflict, NotFound, Unprocessable
from storage import caldb
from storage.caldb.boundaries import parse_boundary, parse_requirement, satisfies
from storage.db.base import utcnow
from storage.db.engine import transaction
from storage.local import LocalObjectStore

from .caldb_files import caldb_file


@pytest.fixture()
def store(tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    store.ensure_buckets()
    return store


def ingest(engine, store, data, **options):
    with transaction(engine) as s:
        return caldb.ingest(s, store, data, caldb.IngestOptions(**options))


def best(engine, **query):
    with transaction(engine) as s:
        return caldb.best_dataset(s, caldb.CaldbQuery(codename="GAIN", **query))


def test_ingest_stores_under_caldb_key_and_indexes(engine, store):
    data = caldb_file(extensions=2)
    result = ingest(engine, store, data, filename="mxt_gain_v1.fits")
    assert result.key == "data/svom/mxt/bcf/gain/mxt_gain_v1.fits"
    assert result.created
    assert store.get("caldb", result.key) == data
    assert [d.extension for d in result.datasets] == [1, 2]
    first = result.datasets[0]
    assert (first.telescope, first.instrument, first.codename, first.cal_class) == (
        "SVOM",
        "MXT",
        "GAIN",
        "BCF",
    )
    assert first.boundaries[0]["name"] == "TEMP"
    assert (first.boundaries[0]["low"], first.boundaries[0]["high"]) == (-70, -60)
    again = ingest(engine, store, data, filename="mxt_gain_v1.fits")
    assert not again.created
    with pytest.raises(Conflict, match="other content"):
        ingest(engine, store, caldb_file(value=3.0), filename="mxt_gain_v1.fits")


@pytest.mark.parametrize(
    "keyword", ["CCLS0001", "CCNM0001", "CDTP0001", "CVSD0001", "CVST0001", "CDES0001", "CBD10001"]
)
def test_missing_keyword_named_nothing_written(engine, store, keyword):
    data = caldb_file(extensions=2, drop=keyword)
    with pytest.raises(Unprocessable) as err:
        ingest(engine, store, data, filename="broken.fits")
    assert keyword in err.value.reason
    assert "HDU 2" in err.value.reason
    assert store.list("caldb").items == []
    with transaction(engine) as s:
        assert caldb.list_datasets(s, caldb.CaldbListRequest()) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a fits file at all" * 200, "not a readable FITS"),
        (b"", "not a readable FITS"),
    ],
)
def test_unreadable_file_rejected(engine, store, data, message):
    with pytest.raises(Unprocessable, match=message):
        ingest(engine, store, data)
    assert store.list("caldb").items == []


def test_primary_only_rejected(engine, store):
    import io

    from astropy.io import fits

    buffer = io.BytesIO()
    fits.PrimaryHDU().writeto(buffer)
    with pytest.raises(Unprocessable, match="no calibration extension"):
        ingest(engine, store, buffer.getvalue())


def test_bad_validity_date_named(engine, store):
    with pytest.raises(Unprocessable, match="CVSD0001"):
        ingest(engine, store, caldb_file(cvsd="22/06/2024"))


def test_validity_dates_select_newest_valid(engine, store):
    ingest(engine, store, caldb_file(cvsd="2024-06-22", value=2.5), filename="g1.fits")
    ingest(
        engine, store, caldb_file(cvsd="2025-01-01", cvst="12:00:00", value=2.6), filename="g2.fits"
    )
    assert best(engine, date="2024-12-31", time="23:59:59").key.endswith("g1.fits")
    assert best(engine, date="2025-01-01", time="11:59:59").key.endswith("g1.fits")
    assert best(engine, date="2025-01-01", time="12:00:00").key.endswith("g2.fits")
    assert best(engine, date="now", time="now").key.endswith("g2.fits")
    with pytest.raises(NotFound, match="no CALDB dataset"):
        best(engine, date="2024-06-21", time="23:59:59")


def test_superseded_by_later_ingest_same_validity(engine, store):
    ingest(engine, store, caldb_file(value=2.5), filename="g_old.fits")
    ingest(engine, store, caldb_file(value=2.55), filename="g_new.fits")
    assert best(engine).key.endswith("g_new.fits")
    with transaction(engine) as s:
        everything = caldb.select_datasets(s, caldb.CaldbQuery(codename="GAIN", all=True))
    assert [d.key.rsplit("/", 1)[1] for d in everything] == ["g_new.fits", "g_old.fits"]
    # reproduce the earlier CALDB state
    cutoff = everything[0].ingested_at
    assert best(engine, ingested_before=cutoff).key.endswith("g_old.fits")


def test_quality_flag_excludes_bad_files(engine, store):
    ingest(engine, store, caldb_file(value=2.5), filename="good.fits")
    ingest(engine, store, caldb_file(value=9.9), filename="bad.fits", quality=5)
    assert best(engine).key.endswith("good.fits")
    with transaction(engine) as s:
        caldb.set_quality(s, "data/svom/mxt/bcf/gain/good.fits", 5)
    with pytest.raises(NotFound):
        best(engine)
    with pytest.raises(NotFound), transaction(engine) as s:
        caldb.set_quality(s, "data/svom/mxt/bcf/gain/missing.fits", 0)


def test_boundaries(engine, store):
    ingest(engine, store, caldb_file(boundaries=("TEMP(-70--60)C",), value=1), filename="cold.fits")
    ingest(engine, store, caldb_file(boundaries=("TEMP(-60-0)C",), value=2), filename="warm.fits")
    ingest(engine, store, caldb_file(codename="QE", boundaries=("NONE",)), filename="qe.fits")
    assert best(engine, boundaries=["TEMP(-65)C"]).key.endswith("cold.fits")
    assert best(engine, boundaries=["temp.eq.-30"]).key.endswith("warm.fits")
    with pytest.raises(NotFound, match="TEMP\\(-100\\)C"):
        best(engine, boundaries=["TEMP(-100)C"])
    with pytest.raises(NotFound):
        best(engine, boundaries=["TEMP(-65)K"])  # units disagree
    # a file without a boundary on TEMP does not depend on it
    with transaction(engine) as s:
        qe = caldb.best_dataset(s, caldb.CaldbQuery(codename="QE", boundaries=["TEMP(-65)C"]))
    assert qe.key.endswith("qe.fits")


def test_detector_matching(engine, store):
    ingest(engine, store, caldb_file(detector="CCD"), filename="ccd.fits")
    assert best(engine, detector="CCD").key.endswith("ccd.fits")
    assert best(engine, detector="-").key.endswith("ccd.fits")
    with pytest.raises(NotFound):
        best(engine, detector="OTHER")


def test_ingest_stored_object(engine, store):
    store.put("caldb", "incoming/gain_v3.fits", caldb_file(value=3.3))
    with transaction(engine) as s:
        result = caldb.ingest_stored(s, store, caldb.IngestOptions(key="incoming/gain_v3.fits"))
    assert result.key == "data/svom/mxt/bcf/gain/gain_v3.fits"
    with pytest.raises(NotFound), transaction(engine) as s:
        caldb.ingest_stored(s, store, caldb.IngestOptions(key="incoming/none.fits"))
    with pytest.raises(BadInput), transaction(engine) as s:
        caldb.ingest_stored(s, store, caldb.IngestOptions(key="../etc/passwd"))


@pytest.mark.parametrize(
    ("date", "time"), [("2024-13-01", "00:00:00"), ("yesterday", "now"), ("now", "25:00")]
)
def test_bad_query_time_named(engine, date, time):
    with pytest.raises(BadInput, match="date|time"):
        best(engine, date=date, time=time)


def test_boundary_parsing():
    assert parse_boundary("NONE") is None
    energy = parse_boundary("ENERG(0.2-10)keV")
    assert (energy.low, energy.high, energy.unit) == (0.2, 10, "keV")
    assert parse_boundary("MODE(PC,WT)").words == ["PC", "WT"]
    assert satisfies([parse_boundary("MODE(PC,WT)").model_dump()], [parse_requirement("MODE(wt)")])
    with pytest.raises(ValueError, match="NAME\\(VALUE\\)UNIT"):
        parse_boundary("garbage")
    with pytest.raises(BadInput, match="garbage"):
        parse_requirement("garbage")


def test_now_is_recent():
    from storage.caldb.index import query_time

    assert abs(query_time("now", "now") - utcnow()) < timedelta(seconds=5)


def test_overlong_codename_named(engine, store):
    with pytest.raises(Unprocessable, match="CCNM0001 longer than 32"):
        ingest(engine, store, caldb_file(codename="G" * 40))
    assert store.list("caldb").items == []
