"""configdb on SQLite and PostgreSQL: immutable versions, one active, history, YAML seed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bricks.errors import BadInput, Conflict, NotFound
from storage import configdb
from storage.db.engine import transaction

TOO_DAG = [
    {"brick": "ingest", "needs": [], "params": {}},
    {"brick": "calibrate", "needs": ["ingest"], "params": {"split_threshold_ev": 60}},
    {"brick": "detect", "needs": ["calibrate"], "params": {"snr_min": 5.0}},
]


def spec(**overrides):
    return configdb.ConfigSpec.model_validate({"programme": "ToO", "dag": TOO_DAG, **overrides})


def test_put_assigns_versions_and_is_idempotent(engine):
    with transaction(engine) as s:
        first, created = configdb.put_config(s, spec())
    assert (first.version, created) == (1, True)
    with transaction(engine) as s:
        again, created = configdb.put_config(s, spec())
    assert (again.version, created) == (1, False)
    changed = [*TOO_DAG[:2], {**TOO_DAG[2], "params": {"snr_min": 4.0}}]
    with transaction(engine) as s:
        second, created = configdb.put_config(s, spec(dag=changed))
    assert (second.version, created) == (2, True)
    with transaction(engine) as s:
        assert [c.version for c in configdb.list_configs(s, "ToO")] == [1, 2]
        assert configdb.get_config(s, "ToO", 1).dag[2]["params"] == {"snr_min": 5.0}


def test_explicit_version_is_immutable(engine):
    with transaction(engine) as s:
        configdb.put_config(s, spec(version=3))
    with pytest.raises(Conflict, match="immutable"), transaction(engine) as s:
        configdb.put_config(s, spec(version=3, parameters={"other": True}))
    with transaction(engine) as s:
        _, created = configdb.put_config(s, spec(version=3))
        assert created is False
        assert configdb.get_config(s, "ToO", 3).parameters == {}


def test_one_active_and_history(engine):
    with transaction(engine) as s:
        configdb.put_config(s, spec())
        configdb.put_config(s, spec(parameters={"x": 1}))
    with pytest.raises(NotFound, match="no active configuration"), transaction(engine) as s:
        configdb.get_config(s, "ToO")
    with transaction(engine) as s:
        configdb.activate(s, "ToO", 1, "first")
        configdb.activate(s, "ToO", 2, "second")
        configdb.activate(s, "ToO", 2, "again: no new history entry")
    with transaction(engine) as s:
        active = configdb.get_config(s, "ToO")
        assert (active.version, active.active) == (2, True)
        assert configdb.get_config(s, "ToO", 1).active is False
        history = configdb.activation_history(s, "ToO")
        assert [(h.version, h.comment) for h in history] == [(1, "first"), (2, "second")]
        assert sum(c.active for c in configdb.list_configs(s)) == 1
    with pytest.raises(NotFound), transaction(engine) as s:
        configdb.activate(s, "ToO", 9)


@pytest.mark.parametrize(
    ("dag", "message"),
    [
        ([{"brick": "a", "needs": ["b"]}, {"brick": "b", "needs": ["a"]}], "cycle"),
        ([{"brick": "a", "needs": ["zzz"]}], "unknown brick"),
        ([{"brick": "a"}, {"brick": "a"}], "twice"),
        ([{"brick": "A-b"}], "pattern"),
        ([{"brick": "a", "extra": 1}], "Extra inputs"),
        ([], "at least 1"),
    ],
)
def test_invalid_dag_named(dag, message):
    with pytest.raises(ValidationError, match=message):
        spec(dag=dag)


def test_unknown_programme_rejected():
    with pytest.raises(ValidationError, match="programme"):
        spec(programme="XX")


def test_seed_from_yaml(engine, tmp_path):
    (tmp_path / "too.yml").write_text(
        "programme: ToO\n"
        "dag:\n"
        "  - {brick: ingest}\n"
        "  - {brick: calibrate, needs: [ingest], params: {gain: 2.5}}\n"
        "---\n"
        "programme: GP\n"
        "dag: [{brick: ingest}]\n"
    )
    specs = configdb.load_yaml_specs([tmp_path / "too.yml"])
    with transaction(engine) as s:
        seeded = configdb.seed(s, specs)
    assert [(c.programme, c.version, c.active) for c in seeded] == [
        ("ToO", 1, True),
        ("GP", 1, True),
    ]
    with transaction(engine) as s:
        assert [(c.programme, c.version) for c in configdb.seed(s, specs)] == [
            ("ToO", 1),
            ("GP", 1),
        ]
        assert len(configdb.list_configs(s)) == 2
    (tmp_path / "too.yml").write_text("programme: ToO\ndag: [{brick: ingest, params: {v: 2}}]\n")
    with transaction(engine) as s:
        configdb.seed(s, configdb.load_yaml_specs([tmp_path / "too.yml"]))
    with transaction(engine) as s:
        assert configdb.get_config(s, "ToO").version == 2
        assert [h.version for h in configdb.activation_history(s, "ToO")] == [1, 2]


def test_seed_bad_yaml_names_file_and_field(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("programme: ToO\ndag: [{brick: ingest, needs: 7}]\n")
    with pytest.raises(BadInput, match=r"bad.yml document 0: dag.0.needs"):
        configdb.load_yaml_specs([bad])


def test_sql_looking_strings_stored_verbatim(engine):
    hostile = "x'); DROP TABLE programme_configs; --"
    with transaction(engine) as s:
        record, _ = configdb.put_config(s, spec(comment=hostile, parameters={hostile: hostile}))
    with transaction(engine) as s:
        stored = configdb.get_config(s, "ToO", record.version)
        assert stored.comment == hostile
        assert stored.parameters == {hostile: hostile}


def test_yaml_values_json_cannot_hold_are_named(tmp_path):
    bad = tmp_path / "dates.yml"
    bad.write_text("programme: GP\ndag: [{brick: ingest}]\nparameters: {since: 2024-06-22}\n")
    with pytest.raises(BadInput, match="parameters"):
        configdb.load_yaml_specs([bad])
    nan = tmp_path / "nan.yml"
    nan.write_text("programme: GP\ndag: [{brick: ingest, params: {gain: .nan}}]\n")
    with pytest.raises(BadInput, match="params"):
        configdb.load_yaml_specs([nan])
