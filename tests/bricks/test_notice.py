"""The notice brick: GCN JSON and a VOEvent shaped like the real SVOM MXT notices."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pydantic import ValidationError

from bricks.calibration import model_calibrations
from bricks.detect import BRICK as DETECT
from bricks.errors import BadInput
from bricks.notice import BRICK, quality_flag, utc_iso_from_mission
from tests.bricks.localisation_scene import Scene, SceneSource, l2_hdulist

NOTICES = Path("/work/shared/data/mxt_notices")
NS = {"voe": "http://www.ivoa.net/xml/VOEvent/v2.0"}
GCN_FIELDS = (
    "mission",
    "instrument",
    "alert_tense",
    "alert_type",
    "alert_datetime",
    "id",
    "record_number",
    "trigger_time",
    "image_snr",
    "image_duration",
    "energy_flux",
    "energy_flux_error",
    "ra",
    "dec",
    "ra_dec_error",
    "ra_pointing",
    "dec_pointing",
    "roll",
)
OBS_META = {"OBS_ID": "sb26022501_01", "BURST_ID": "sb26022501", "RA_OBJ": 150.1, "DEC_OBJ": 20.0}


@pytest.fixture(scope="module")
def position() -> dict:
    scene = Scene(sources=(SceneSource(150.05, 20.08, 2000.0),), roll=287.2, seed=5)
    return DETECT({"l2_events": l2_hdulist(scene)}, model_calibrations())["position"]


def _structure(root: ET.Element) -> tuple[set[str], list[str]]:
    """Param names and group names of a VOEvent's What."""
    what = root.find("What")
    params = {p.get("name") for p in what.iter("Param")}
    groups = [g.get("name") for g in what.iter("Group")]
    return params, groups


def _notice(position: dict, **config: object) -> dict:
    return BRICK({"position": position, "obs_meta": OBS_META}, {}, config)


def test_voevent_has_the_shape_of_the_real_notices(position: dict) -> None:
    out = _notice(position, alert_datetime="2026-02-25T10:17:26")
    root = ET.fromstring(out["notice_voevent"])
    real = ET.parse(NOTICES / "mxt_49.xml").getroot()  # a recent one, with Alert_Seq_T0
    assert root.tag == real.tag == f"{{{NS['voe']}}}VOEvent"
    assert root.get("version") == "2.0" and root.get("role") == "observation"
    assert [child.tag for child in root] == [child.tag for child in real]
    ours, theirs = _structure(root), _structure(real)
    assert ours[0] == theirs[0], ours[0] ^ theirs[0]
    assert ours[1] == theirs[1]
    assert re.fullmatch(r"ivo://org\.svom/fsc#sb26022501_mxt-initial_qf[1-4]", root.get("ivorn"))
    assert root.findtext("Who/AuthorIVORN") == real.findtext("Who/AuthorIVORN")
    assert root.findtext("Who/Date") == "2026-02-25T10:17:26+00:00"
    params = {p.get("name"): p for p in root.iter("Param")}
    for name, param in params.items():
        twin = next(p for p in real.iter("Param") if p.get("name") == name)
        assert param.get("unit") == twin.get("unit"), name
        assert param.get("ucd") == twin.get("ucd"), name
    assert params["Packet_Type"].get("value") == "209"
    assert params["Burst_Id"].get("value") == "sb26022501"
    assert float(params["SNR"].get("value")) == pytest.approx(min(position["snr"], 255), abs=0.01)
    assert float(params["Attitude_Roll"].get("value")) == pytest.approx(287.2, abs=0.01)
    # ECLAIRs angle: between the MXT position and the target (RA_OBJ, DEC_OBJ).
    assert 0.0 < float(params["ECLAIRs_Angle"].get("value")) < 10.0
    assert params["Within_ECLAIRs_R90"].get("value") == "True"


def test_where_when_carries_the_position_and_the_90_percent_radius(position: dict) -> None:
    root = ET.fromstring(_notice(position)["notice_voevent"])
    pos = root.find("WhereWhen/ObsDataLocation/ObservationLocation/AstroCoords/Position2D")
    assert pos.get("unit") == "deg"
    assert float(pos.findtext("Value2/C1")) == pytest.approx(position["ra"], abs=1e-4)
    assert float(pos.findtext("Value2/C2")) == pytest.approx(position["dec"], abs=1e-4)
    radius = float(pos.findtext("Error2Radius"))
    assert radius == pytest.approx(position["err90_arcsec"] / 3600.0, abs=1e-4)
    iso = root.findtext(".//TimeInstant/ISOTime")
    assert iso == utc_iso_from_mission(position["trigger_time"])
    # TT − UTC = 69.184 s: 2026-07-05T05:18:00 TT is 05:16:50.816 UTC.
    assert utc_iso_from_mission(299_999_880.0) == "2026-07-05T05:16:50.816000"


def test_update_cites_the_initial_notice(position: dict) -> None:
    root = ET.fromstring(
        _notice(position, alert_type="update", record_number=2, initial_quality_flag=1)[
            "notice_voevent"
        ]
    )
    assert "_mxt-update_qf" in root.get("ivorn")
    params = {p.get("name"): p.get("value") for p in root.iter("Param")}
    assert params["Packet_Type"] == "210" and params["Pkt_Ser_Num"] == "2"
    cited = [e.text for e in root.iter("EventIVORN")]
    assert cited[-1] == "ivo://org.svom/fsc#sb26022501_mxt-initial_qf1"
    real = ET.parse(NOTICES / "mxt_42.xml").getroot()  # the real update
    assert [e.get("cite") for e in root.iter("EventIVORN")] == [
        e.get("cite") for e in real.iter("EventIVORN")
    ]


def test_json_uses_the_gcn_schema_field_names(position: dict) -> None:
    body = _notice(position)["notice_json"]
    missing = [name for name in GCN_FIELDS if name not in body]
    assert not missing
    assert body["mission"] == "SVOM" and body["instrument"] == "MXT"
    assert body["id"] == ["sb26022501"] and body["alert_type"] == "initial"
    assert body["ra"] == pytest.approx(position["ra"], abs=1e-4)
    assert body["ra_dec_error"] == pytest.approx(position["err90_arcsec"] / 3600, abs=1e-4)
    assert body["image_duration"] == pytest.approx(300.0)
    assert body["roll"] == pytest.approx(287.2)
    rate = position["counts"] / 300.0
    assert body["energy_flux"] == pytest.approx(rate * 1.2e-10, rel=1e-6)
    assert 0 < body["energy_flux_error"] < body["energy_flux"]
    assert body["systematic_included"] is True and body["containment_probability"] == 0.9


def test_zero_coordinates_are_values_not_gaps(position: dict) -> None:
    """RA_OBJ = 0 or a zero pointing are real positions, not missing ones."""
    meta = {**OBS_META, "ra_obj": 0.0, "dec_obj": 0.0, "ra_pnt": 0.0, "dec_pnt": 0.0}
    meta.pop("RA_OBJ"), meta.pop("DEC_OBJ")
    body = BRICK({"position": position, "obs_meta": meta}, {})["notice_json"]
    assert body["ra_pointing"] == 0.0 and body["dec_pointing"] == 0.0
    root = ET.fromstring(BRICK({"position": position, "obs_meta": meta}, {})["notice_voevent"])
    angle = float(
        next(p for p in root.iter("Param") if p.get("name") == "ECLAIRs_Angle").get("value")
    )
    assert angle > 60.0 * 100  # the target at (0, 0) is far from (150, 20)


def test_notice_is_reproducible(position: dict) -> None:
    """Without an explicit date the notice is dated by the data's end: same in, same out."""
    first, second = _notice(position), _notice(position)
    assert first == second
    assert first["notice_json"]["alert_datetime"] == utc_iso_from_mission(position["tstop"])[:19]


def test_no_detection_is_a_notice_that_says_so_without_voevent() -> None:
    l2 = l2_hdulist(Scene(sources=(), background_counts=0))
    position = DETECT({"l2_events": l2}, model_calibrations())["position"]
    out = _notice(position)
    assert "notice_voevent" not in out
    assert out["notice_json"]["status"] == "no_detection"
    assert "ra" not in out["notice_json"]


def test_quality_flag_follows_the_real_notices() -> None:
    for path in sorted(NOTICES.glob("mxt_*.xml")):
        root = ET.parse(path).getroot()
        radius = float(root.findtext(".//Error2Radius"))
        flag = int(root.get("ivorn")[-1])
        assert quality_flag(radius) == flag, path.name


def test_bad_inputs_are_named(position: dict) -> None:
    with pytest.raises(BadInput, match="status"):
        BRICK({"position": {"ra": 1.0}, "obs_meta": OBS_META}, {})
    broken = {**position, "ra": "north"}
    with pytest.raises(BadInput, match="ra, dec"):
        BRICK({"position": broken, "obs_meta": OBS_META}, {})
    with pytest.raises(BadInput, match="obs_meta"):
        BRICK({"position": position, "obs_meta": ["x"]}, {})
    with pytest.raises(BadInput, match="obs_meta"):
        BRICK({"position": position}, {})
    with pytest.raises(BadInput, match="trigger time"):
        BRICK({"position": position, "obs_meta": {**OBS_META, "trigger_time": "soon"}}, {})
    with pytest.raises(ValidationError, match="alert_type"):
        BRICK({"position": position, "obs_meta": OBS_META}, {}, {"alert_type": "final"})


def test_notice_from_the_whole_chain() -> None:
    """Simulator → ingest … detect → notice: obs_meta from ingest feeds the notice."""
    from bricks.pipeline import run_bricks
    from bricks.registry import get_brick
    from bricks.simulate import Scene as SimScene
    from bricks.simulate import Source, simulate
    from bricks.timeutil import mission_seconds

    t0 = mission_seconds("2026-02-25T09:36:39.104")
    scene = SimScene(
        obs_id="sb26022501_mxt",
        burst_id="sb26022501",
        ra_pnt=204.8,
        dec_pnt=45.1,
        roll=287.2,
        trigger_time=t0,
        tstart=t0 + 300.0,
        duration=300.0,
        sources=[Source(ra=204.8665, dec=45.1204, flux=3e-10)],
        seed=3,
    )
    l0, _ = simulate(scene)
    names = ("ingest", "calibrate", "coordinates", "screen", "detect", "notice")
    out = run_bricks([get_brick(n) for n in names], {"l0": l0}, model_calibrations())
    body = out["notice_json"]
    assert body["id"] == ["sb26022501"] and body["status"] == "detected"
    assert body["trigger_time"] == utc_iso_from_mission(t0)
    assert body["roll"] == pytest.approx(287.2, abs=0.1)
    # the simulated absorbed 0.3–10 keV flux comes back through the counts and the ECF
    assert body["energy_flux"] == pytest.approx(3e-10, rel=0.15)
    root = ET.fromstring(out["notice_voevent"])
    assert root.get("ivorn").startswith("ivo://org.svom/fsc#sb26022501_mxt-initial_qf")
    c1 = float(root.findtext(".//Value2/C1"))
    c2 = float(root.findtext(".//Value2/C2"))
    assert abs(c1 - 204.8665) * 0.7 < 0.02 and abs(c2 - 45.1204) < 0.02
