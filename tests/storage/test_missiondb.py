"""missiondb on SQLite and PostgreSQL: insert-or-get, compare-and-set, provenance, queries."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from bricks.errors import BadInput, Conflict, NotFound
from storage import missiondb as mdb
from storage.db.engine import transaction

SHA = "a" * 64
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def observation(**overrides):
    values = {
        "obs_id": "obs-001",
        "programme": "ToO",
        "object_name": "GRB 260301A",
        "ra": 150.1,
        "dec": -20.5,
        "trigger_time": T0.isoformat(),
        "raw_key": "raw/obs-001/l0.fits",
        "raw_sha256": SHA,
    }
    return mdb.ObservationSpec.model_validate({**values, **overrides})


def setup_run(engine, run_id="run-1", bricks=("ingest", "calibrate", "detect")):
    with transaction(engine) as s:
        mdb.register_observation(s, observation())
        mdb.create_run(
            s,
            mdb.RunSpec(
                run_id=run_id,
                obs_id="obs-001",
                programme="ToO",
                config_version=1,
                bricks=list(bricks),
            ),
        )


def test_register_observation_insert_or_get(engine):
    with transaction(engine) as s:
        record, created = mdb.register_observation(s, observation())
    assert created and record.trigger_time == T0
    with transaction(engine) as s:
        again, created = mdb.register_observation(s, observation())
    assert not created and again.registered_at == record.registered_at
    with pytest.raises(Conflict, match="raw_sha256"), transaction(engine) as s:
        mdb.register_observation(s, observation(raw_sha256="b" * 64))
    with pytest.raises(NotFound), transaction(engine) as s:
        mdb.get_observation(s, "nope")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("raw_key", "../etc/passwd"),
        ("raw_key", "/abs"),
        ("obs_id", "a/b"),
        ("ra", 400),
        ("raw_sha256", "xyz"),
        ("obs_id", ""),
    ],
)
def test_observation_bad_fields_named(field, value):
    with pytest.raises((ValidationError, BadInput)) as err:
        observation(**{field: value})
    assert field in str(err.value) or "key" in str(err.value)


def test_run_and_task_transitions(engine):
    setup_run(engine)
    with transaction(engine) as s:
        tasks = mdb.run_tasks(s, "run-1")
        assert [t.brick for t in tasks] == ["ingest", "calibrate", "detect"]
        assert all(t.state == "pending" for t in tasks)
        assert mdb.transition_run(s, "run-1", ["pending"], "running")
        assert not mdb.transition_run(s, "run-1", ["pending"], "running")
        assert mdb.transition_task(
            s, "run-1.ingest", ["pending"], "dispatched", call_id="c1", count_attempt=True
        )
        assert mdb.transition_task(s, "run-1.ingest", ["dispatched"], "succeeded")
    with transaction(engine) as s:
        run = mdb.get_run(s, "run-1")
        assert run.state == "running" and run.started_at is not None
        ingest = mdb.run_tasks(s, "run-1")[0]
        assert (ingest.state, ingest.attempts, ingest.call_id) == ("succeeded", 1, "c1")
        assert ingest.finished_at is not None
    # re-creating the run is insert-or-get and keeps its state
    with transaction(engine) as s:
        run, created = mdb.create_run(
            s, mdb.RunSpec(run_id="run-1", programme="ToO", bricks=["ingest"])
        )
        assert not created and run.state == "running"


def test_fan_in_exactly_one_winner(engine):
    """Two finishers race to dispatch the same downstream task: one wins."""
    setup_run(engine)
    winners = []
    barrier = threading.Barrier(4)

    def finisher():
        barrier.wait()
        with transaction(engine) as s:
            if mdb.transition_task(
                s, "run-1.detect", ["pending"], "dispatched", count_attempt=True
            ):
                winners.append(threading.get_ident())

    threads = [threading.Thread(target=finisher) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    with transaction(engine) as s:
        assert mdb.run_tasks(s, "run-1")[2].attempts == 1


def product(**overrides):
    values = {
        "run_id": "run-1",
        "task_id": "run-1.detect",
        "name": "position",
        "key": "products/run-1/detect/position.json",
        "sha256": SHA,
        "size": 120,
        "content_type": "application/json",
        "provenance": {
            "brick": "detect",
            "brick_version": "1.0.0",
            "config_version": 1,
            "caldb_files": [{"key": "data/svom/mxt/bcf/psf/psf_v1.fits", "sha256": SHA}],
            "inputs": [{"key": "products/run-1/screen/l2.fits", "sha256": SHA}],
            "started_at": T0.isoformat(),
            "finished_at": (T0 + timedelta(seconds=2)).isoformat(),
        },
    }
    return mdb.ProductSpec.model_validate({**values, **overrides})


def test_products_with_provenance(engine):
    setup_run(engine)
    with transaction(engine) as s:
        record, created = mdb.register_product(s, product())
    assert created
    assert record.provenance["caldb_files"][0]["key"].endswith("psf_v1.fits")
    assert record.provenance["brick_version"] == "1.0.0"
    with transaction(engine) as s:
        _, created = mdb.register_product(s, product())
    assert not created
    with pytest.raises(Conflict, match="sha256"), transaction(engine) as s:
        mdb.register_product(s, product(sha256="c" * 64))
    with pytest.raises(NotFound, match="run nope"), transaction(engine) as s:
        mdb.register_product(s, product(run_id="nope"))
    with transaction(engine) as s:
        assert mdb.mark_products_partial(s, "run-1") == 1
        page = mdb.query(s, mdb.QueryRequest(entity="products", filters={"run_id": "run-1"}))
    assert [p["partial"] for p in page.items] == [True]


def test_register_products_batch(engine):
    """A batch: new names created, repeats found, a changed object refused whole."""
    setup_run(engine)
    region = {"name": "region", "key": "products/run-1/detect/r.reg"}
    with transaction(engine) as s:
        mdb.register_product(s, product())
    with transaction(engine) as s:
        results = mdb.register_products(s, [product(), product(**region)])
    assert [(r.name, created) for r, created in results] == [
        ("position", False),
        ("region", True),
    ]
    assert not any(r.partial for r, _ in results)
    image = {"name": "image", "key": "products/run-1/detect/i.fits"}
    with pytest.raises(Conflict, match="position"), transaction(engine) as s:
        mdb.register_products(s, [product(**image), product(sha256="c" * 64)])
    with transaction(engine) as s:
        names = {p["name"] for p in mdb.query(s, mdb.QueryRequest(entity="products")).items}
    assert names == {"position", "region"}  # the refused batch left nothing
    with pytest.raises(BadInput, match="twice"), transaction(engine) as s:
        mdb.register_products(s, [product(**image), product(**image)])
    with pytest.raises(BadInput, match="one run"), transaction(engine) as s:
        mdb.register_products(s, [product(), product(run_id="run-2", **image)])


def test_products_of_an_ended_run_are_partial(engine):
    setup_run(engine)
    with transaction(engine) as s:
        mdb.transition_run(s, "run-1", ["pending"], "failed", "test")
        ((record, created),) = mdb.register_products(s, [product()])
    assert created and record.partial


def test_product_provenance_required():
    with pytest.raises(ValidationError, match="brick_version"):
        product(provenance={"brick": "detect"})


def test_calls(engine):
    with transaction(engine) as s:
        mdb.record_call(s, mdb.CallSpec(call_id="c-1", function="calibrate"))
        mdb.record_call(s, mdb.CallSpec(call_id="c-1", function="calibrate"))
        assert mdb.transition_call(s, "c-1", ["queued"], "running", count_attempt=True)
        assert mdb.transition_call(s, "c-1", ["running"], "succeeded", status_code=200)
        assert not mdb.transition_call(s, "c-1", ["running"], "failed")
        page = mdb.query(s, mdb.QueryRequest(entity="calls", filters={"function": "calibrate"}))
    assert len(page.items) == 1
    call = page.items[0]
    assert (call["state"], call["attempts"], call["status_code"]) == ("succeeded", 1, 200)


def test_logs_filters_and_keyset_pagination(engine):
    lines = [
        mdb.LogSpec(
            time=T0 + timedelta(seconds=i),
            level=level,
            message=f"line {i}",
            run_id="run-1" if i % 2 == 0 else "run-2",
            task_id=f"t{i % 3}",
            function="calibrate",
        )
        for i, level in enumerate(["DEBUG", "INFO", "WARNING", "ERROR", "INFO", "CRITICAL"] * 5)
    ]
    with transaction(engine) as s:
        assert mdb.append_logs(s, lines) == 30
    collected = []
    after = None
    while True:
        with transaction(engine) as s:
            page = mdb.query(
                s,
                mdb.QueryRequest(entity="logs", filters={"run_id": "run-1"}, limit=4, after=after),
            )
        collected += page.items
        if page.next_after is None:
            break
        after = page.next_after
    assert [m["message"] for m in collected] == [f"line {i}" for i in range(0, 30, 2)]
    with transaction(engine) as s:
        errors = mdb.query(s, mdb.QueryRequest(entity="logs", filters={"level": "ERROR"}))
        window = mdb.query(
            s,
            mdb.QueryRequest(
                entity="logs",
                filters={"since": T0 + timedelta(seconds=3), "until": T0 + timedelta(seconds=5)},
            ),
        )
        newest = mdb.query(s, mdb.QueryRequest(entity="logs", limit=2, descending=True))
    assert {m["level"] for m in errors.items} == {"ERROR", "CRITICAL"}
    assert len(errors.items) == 10
    assert [m["message"] for m in window.items] == ["line 3", "line 4"]
    assert [m["message"] for m in newest.items] == ["line 29", "line 28"]


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({"entity": "runs", "filters": {"colour": "red"}}, "filters.colour"),
        ({"entity": "runs", "filters": {"state": "exploded"}}, "filters.state"),
        ({"entity": "secrets"}, "entity"),
        ({"entity": "logs", "limit": 100000}, "limit"),
        ({"entity": "logs", "after": "x"}, "after"),
    ],
)
def test_query_bad_input_named(request_body, message):
    with pytest.raises(ValidationError, match=message):
        mdb.QueryRequest.model_validate(request_body)


def test_sql_looking_filter_is_just_a_value(engine):
    setup_run(engine)
    with transaction(engine) as s:
        page = mdb.query(
            s, mdb.QueryRequest(entity="observations", filters={"object_name": "x' OR '1'='1"})
        )
        assert page.items == []
        assert len(mdb.query(s, mdb.QueryRequest(entity="observations")).items) == 1


def test_bad_input_class():
    assert issubclass(NotFound, BadInput)


def test_naive_times_rejected_with_field_named():
    with pytest.raises(ValidationError, match="tstart"):
        observation(tstart="2026-03-01T12:00:00")
    with pytest.raises(ValidationError, match="since"):
        mdb.QueryRequest(entity="logs", filters={"since": "2026-03-01T12:00:00"})


def test_concurrent_insert_or_get_one_row(engine):
    """Redelivered registrations racing each other: one creates, the others get it."""
    outcomes = []
    barrier = threading.Barrier(4)

    def register():
        barrier.wait()
        with transaction(engine) as s:
            outcomes.append(mdb.register_observation(s, observation())[1])

    threads = [threading.Thread(target=register) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False, False, False, True]
    with transaction(engine) as s:
        assert len(mdb.query(s, mdb.QueryRequest(entity="observations")).items) == 1


def test_sqlite_reader_never_waits_for_a_writer(tmp_path, monkeypatch):
    """A read-only transaction reads the last commit while a writer holds the lock; a
    writing one queues behind it (here: fails after a short busy timeout)."""
    from sqlalchemy import exc

    from storage.db import engine as db_engine
    from storage.db.engine import make_engine, upgrade_to_head

    monkeypatch.setattr(db_engine, "SQLITE_BUSY_MS", 200)
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    setup_run(engine)
    try:
        with transaction(engine) as writer:
            mdb.transition_run(writer, "run-1", ["pending"], "running")
            writer.flush()  # the write lock is held until the commit
            with transaction(engine, read_only=True) as reader:
                assert mdb.get_run(reader, "run-1").state == "pending"
            # a read-write transaction begins IMMEDIATE: it waits for the lock
            with pytest.raises(exc.OperationalError, match="locked"), engine.connect() as other:
                other.exec_driver_sql("SELECT 1")
        with transaction(engine, read_only=True) as reader:
            assert mdb.get_run(reader, "run-1").state == "running"
    finally:
        engine.dispose()
