"""Notice: the MXT position alert, as GCN JSON and as a VOEvent 2.0.

The VOEvent follows the SVOM MXT notices distributed on GCN (format reference:
``/work/shared/data/mxt_notices/``): ivorn ``ivo://org.svom/fsc#<burst>_mxt-<initial|
update>_qf<n>``, ``Who`` with the FSC author, ``What`` with Packet_Type (209 initial,
210 update), Pkt_Ser_Num, Instrument and the groups Svom_Identifiers, Detection_Info,
Target_Info and Satellite_Info, ``WhereWhen`` with the trigger time and the position
with its Error2Radius (degrees, 90 %, systematic included), ``How`` and ``Citations``
(an update cites the initial notice).

The JSON uses the field names of the GCN schema ``gcn/notices/svom/mxt/mxt.schema.json``
(nasa-gcn/gcn-schema): mission, instrument, alert_tense, alert_type, alert_datetime,
id, record_number, trigger_time, image_snr, image_duration, energy_flux,
energy_flux_error, ra, dec, ra_dec_error, ra_pointing, dec_pointing, roll (plus the
core Localization fields containment_probability and systematic_included).

No detection: the JSON says so (``"status": "no_detection"``, no position) and no
VOEvent is produced, since a position alert without a position is no alert.

Values the L0 file does not carry (the spacecraft's orbit, the VT attitude mode, the
ECLAIRs error circle) come from ``obs_meta`` when present; otherwise the orbit Params
are written with an empty value and the ECLAIRs radius from the configuration.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
from pydantic import Field

from bricks.base import Brick, BrickConfig
from bricks.errors import BadInput
from bricks.products import NOTICE_JSON, NOTICE_VOEVENT, OBS_META, POSITION
from bricks.timeutil import MISSION_EPOCH

VERSION = "1.0.0"
VOEVENT_NS = "http://www.ivoa.net/xml/VOEvent/v2.0"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
VOEVENT_XSD = "http://www.ivoa.net/xml/VOEvent/VOEvent-v2.0.xsd"
CITED_STEPS = ("eclairs-preliminary", "eclairs-wakeup", "slewing")
"""Earlier notices of the same burst that every MXT notice cites, as the real ones do."""
AUTHOR_IVORN = "ivo://org.svom/fsc"
PACKET_TYPE = {"initial": 209, "update": 210}
TT_MINUS_UTC_S = 69.184
"""TT − UTC since 2017-01-01 (32.184 s + 37 leap seconds; none announced since)."""
QUALITY_EDGES_DEG = (0.04, 0.02, 0.0112)
"""Error2Radius bounds of quality flags 1–4, inferred from the public MXT notices."""


class NoticeConfig(BrickConfig):
    """Parameters of the notice brick.

    Parameters
    ----------
    alert_type
        ``"initial"`` (Packet_Type 209) or ``"update"`` (210, cites the initial).
    alert_tense
        GCN alert tense (``"current"``, ``"archival"``, ``"injection"``…).
    record_number
        Pkt_Ser_Num / record_number: the serial number of this notice for the burst.
    initial_quality_flag
        Quality flag of the initial notice an update cites.
    alert_datetime
        Notice date (UTC ISO 8601). When unset, the UTC end of the data the position
        rests on (TSTOP), so that re-running the pipeline reproduces the notice; a live
        sender sets it to the sending time.
    ecf_erg_cm2_per_count
        Energy flux per count/s: the absorbed 0.3–10 keV flux of a power law of photon
        index 2 behind NH = 1e21 cm⁻², through the model effective area
        (1.2e-10 erg cm⁻² per count; the simulator's flux convention).
    eclairs_r90_arcmin
        ECLAIRs 90 % error radius about RA_OBJ/DEC_OBJ when ``obs_meta`` has none.
    """

    alert_type: Literal["initial", "update"] = "initial"
    alert_tense: Literal["current", "archival", "planned", "injection", "commanded", "mock"] = (
        "current"
    )
    record_number: int = Field(1, ge=1)
    initial_quality_flag: int = Field(1, ge=1, le=4)
    alert_datetime: str | None = None
    ecf_erg_cm2_per_count: float = Field(1.2e-10, gt=0.0)
    eclairs_r90_arcmin: float = Field(10.0, gt=0.0)


def _meta(obs_meta: Mapping[str, Any], *names: str) -> Any:
    """First of ``names`` in ``obs_meta``, looked up case-insensitively; None if absent."""
    lowered = {str(k).lower(): v for k, v in obs_meta.items()}
    for name in names:
        if lowered.get(name.lower()) is not None:
            return lowered[name.lower()]
    return None


def _either(value: Any, fallback: Any) -> Any:
    """``value`` unless it is None (0.0 is a valid RA, Dec or roll)."""
    return fallback if value is None else value


def utc_iso_from_mission(seconds: float) -> str:
    """UTC ISO 8601 (microseconds) of a mission time (TT seconds since 2017-01-01)."""
    moment = MISSION_EPOCH + timedelta(seconds=float(seconds) - TT_MINUS_UTC_S)
    return moment.isoformat(timespec="microseconds")


def quality_flag(err90_deg: float) -> int:
    """MXT quality flag (1 worst … 4 best) of a 90 % error radius in degrees."""
    return 1 + sum(err90_deg <= edge for edge in QUALITY_EDGES_DEG)


def _data_end_utc(position: Mapping[str, Any]) -> str:
    """UTC end of the observation (TSTOP), to the second; now when the position has none."""
    tstop = position.get("tstop")
    if tstop is None:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return utc_iso_from_mission(float(tstop))[:19]


def _alert_id(position: Mapping[str, Any], obs_meta: Mapping[str, Any]) -> str:
    burst = _meta(obs_meta, "burst_id") or position.get("burst_id")
    return str(burst or _meta(obs_meta, "obs_id") or position.get("obs_id") or "unknown")


def _sky_angles(ra: float, dec: float, time_tt_s: float | None) -> dict[str, float | None]:
    """Galactic coordinates, and Sun and Moon angles (geocentric) at the trigger, deg."""
    from astropy.coordinates import SkyCoord, get_body, get_sun
    from astropy.time import Time

    where = SkyCoord(ra, dec, unit="deg", frame="icrs")
    angles: dict[str, float | None] = {
        "galactic_lon": float(where.galactic.l.deg),
        "galactic_lat": float(where.galactic.b.deg),
        "sun_angle": None,
        "moon_angle": None,
    }
    if time_tt_s is not None:
        when = Time(57754.0 + float(time_tt_s) / 86400.0, format="mjd", scale="tt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            angles["sun_angle"] = float(get_sun(when).separation(where).deg)
            angles["moon_angle"] = float(get_body("moon", when).separation(where).deg)
    return angles


def _angle_deg(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle angle between two positions, degrees (haversine)."""
    r1, d1, r2, d2 = np.radians([ra1, dec1, ra2, dec2])
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return float(np.degrees(2 * np.arcsin(np.sqrt(h))))


def notice_facts(
    position: Mapping[str, Any], obs_meta: Mapping[str, Any], config: NoticeConfig
) -> dict[str, Any]:
    """Everything both notice forms say, computed once.

    Parameters
    ----------
    position
        The ``position`` product of the detect brick (degrees, arcsec, counts, seconds).
    obs_meta
        The ``obs_meta`` product of ingest (keys matched case-insensitively).
    config
        Brick parameters.
    """
    if not isinstance(position, Mapping) or "status" not in position:
        raise BadInput("position must be the detect brick's JSON object with a 'status'")
    trig = _either(_meta(obs_meta, "trigtime", "trigger_time"), position.get("trigger_time"))
    try:
        trig = float(trig) if trig is not None else None
    except (TypeError, ValueError):
        raise BadInput(f"trigger time must be mission seconds, not {trig!r}") from None
    now = config.alert_datetime or _data_end_utc(position)
    facts: dict[str, Any] = {
        "id": _alert_id(position, obs_meta),
        "detected": position["status"] == "detected",
        "alert_datetime": now.replace("+00:00", "").rstrip("Z"),
        "trigger_time_tt": trig,
        "trigger_time": utc_iso_from_mission(trig) if trig is not None else None,
        "image_duration": float(position.get("exposure") or 0.0),
        "ra_pointing": _either(_meta(obs_meta, "ra_pnt"), position.get("ra_pointing")),
        "dec_pointing": _either(_meta(obs_meta, "dec_pnt"), position.get("dec_pointing")),
        "roll": _either(position.get("roll"), _meta(obs_meta, "pa_pnt")),
        "use_vt_attitude": bool(_meta(obs_meta, "use_vt_attitude") or False),
    }
    if not facts["detected"]:
        return facts
    try:
        ra, dec = float(position["ra"]), float(position["dec"])
        err_arcsec = float(position["err90_arcsec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"a detected position needs numeric ra, dec, err90_arcsec: {exc}") from None
    duration = facts["image_duration"]
    rate = float(position.get("counts", 0.0)) / duration if duration > 0 else 0.0
    rate_err = np.sqrt(max(float(position.get("counts", 0.0)), 0.0)) / duration if duration else 0
    facts.update(
        ra=ra,
        dec=dec,
        err90_deg=err_arcsec / 3600.0,
        snr=float(position.get("snr", 0.0)),
        energy_flux=rate * config.ecf_erg_cm2_per_count,
        energy_flux_error=float(rate_err) * config.ecf_erg_cm2_per_count,
        **_sky_angles(ra, dec, trig),
    )
    facts["quality_flag"] = quality_flag(facts["err90_deg"])
    target_ra = _either(_meta(obs_meta, "ra_obj"), position.get("ra_target"))
    target_dec = _either(_meta(obs_meta, "dec_obj"), position.get("dec_target"))
    eclairs_r90 = _either(_meta(obs_meta, "eclairs_r90_arcmin"), config.eclairs_r90_arcmin)
    facts["eclairs_angle_arcmin"] = None
    if target_ra is not None and target_dec is not None:
        angle = 60.0 * _angle_deg(ra, dec, float(target_ra), float(target_dec))
        facts["eclairs_angle_arcmin"] = angle
        facts["within_eclairs_r90"] = angle <= float(eclairs_r90)
    return facts


def notice_json(facts: Mapping[str, Any], config: NoticeConfig) -> dict[str, Any]:
    """The GCN JSON notice (``gcn/notices/svom/mxt/mxt.schema.json`` field names)."""
    body: dict[str, Any] = {
        "$schema": "https://gcn.nasa.gov/schema/main/gcn/notices/svom/mxt/mxt.schema.json",
        "mission": "SVOM",
        "instrument": "MXT",
        "alert_tense": config.alert_tense,
        "alert_type": config.alert_type,
        "alert_datetime": facts["alert_datetime"],
        "id": [facts["id"]],
        "record_number": config.record_number,
        "trigger_time": facts["trigger_time"],
        "image_duration": facts["image_duration"],
        "use_VT_attitude": facts["use_vt_attitude"],
        "ra_pointing": _rounded(facts["ra_pointing"], 4),
        "dec_pointing": _rounded(facts["dec_pointing"], 4),
        "roll": _rounded(facts["roll"], 2),
    }
    if not facts["detected"]:
        body["status"] = "no_detection"
        return body
    body.update(
        status="detected",
        image_snr=round(facts["snr"], 2),
        energy_flux=facts["energy_flux"],
        energy_flux_error=facts["energy_flux_error"],
        ra=round(facts["ra"], 4),
        dec=round(facts["dec"], 4),
        ra_dec_error=round(facts["err90_deg"], 4),
        containment_probability=0.9,
        systematic_included=True,
    )
    return body


def _rounded(value: Any, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _fmt(value: Any, digits: int = 2) -> str:
    """A Param value as the real notices write it: fixed decimals, True/False, or ''."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    return f"{float(value):.{digits}f}"


def _param(parent: ET.Element, name: str, value: str, ucd: str, unit: str | None = None) -> None:
    attrib = {"name": name, "value": value}
    if unit:
        attrib["unit"] = unit
    attrib["ucd"] = ucd
    ET.SubElement(parent, "Param", attrib)


def _ivorn(alert_id: str, alert_type: str, qf: int) -> str:
    return f"{AUTHOR_IVORN}#{alert_id}_mxt-{alert_type}_qf{qf}"


def _who(root: ET.Element, date: str) -> None:
    who = ET.SubElement(root, "Who")
    ET.SubElement(who, "AuthorIVORN").text = AUTHOR_IVORN
    ET.SubElement(who, "Date").text = f"{date}+00:00"
    author = ET.SubElement(who, "Author")
    ET.SubElement(author, "title").text = "SVOM French Science Center"
    ET.SubElement(author, "shortName").text = "FSC"
    ET.SubElement(author, "contactName").text = "MXT pipeline"
    ET.SubElement(author, "contactEmail").text = "svom-contact@cea.fr"


def _what(
    root: ET.Element, facts: Mapping[str, Any], obs_meta: Mapping, config: NoticeConfig
) -> None:
    what = ET.SubElement(root, "What")
    _param(what, "Packet_Type", str(PACKET_TYPE[config.alert_type]), "meta.id")
    _param(what, "Pkt_Ser_Num", str(config.record_number), "meta.id")
    _param(what, "Instrument", "MXT", "instr")
    ids = ET.SubElement(what, "Group", {"name": "Svom_Identifiers"})
    _param(ids, "Notice_Level", "N2m", "meta.id")
    _param(ids, "Burst_Id", facts["id"], "meta.id")
    if facts["trigger_time"]:
        _param(ids, "Alert_Seq_T0", facts["trigger_time"][:23] + "Z", "time.start")
    detection = ET.SubElement(what, "Group", {"name": "Detection_Info"})
    _param(detection, "SNR", _fmt(min(facts["snr"], 255.0)), "stat.snr", "sigma")
    flux_unit = "erg.cm^-2.s^-1"
    _param(detection, "Mean_Flux", f"{facts['energy_flux']:.3e}", "phot.flux", flux_unit)
    _param(detection, "Flux_Error", f"{facts['energy_flux_error']:.3e}", "phot.flux", flux_unit)
    target = ET.SubElement(what, "Group", {"name": "Target_Info"})
    _param(target, "Within_ECLAIRs_R90", _fmt(facts.get("within_eclairs_r90")), "instr.param")
    angle = facts["eclairs_angle_arcmin"]
    _param(target, "ECLAIRs_Angle", _fmt(angle), "pos.angdistance", "arcmin")
    _param(target, "Galactic_Lon", _fmt(facts["galactic_lon"]), "pos.galactic.lon", "deg")
    _param(target, "Galactic_Lat", _fmt(facts["galactic_lat"]), "pos.galactic.lat", "deg")
    _param(target, "Moon_Angle", _fmt(facts["moon_angle"]), "pos.angdistance", "deg")
    _param(target, "Sun_Angle", _fmt(facts["sun_angle"]), "pos.angdistance", "deg")
    satellite = ET.SubElement(what, "Group", {"name": "Satellite_Info"})
    _param(satellite, "Use_VT_Attitude", _fmt(facts["use_vt_attitude"]), "instr.param")
    _param(satellite, "Attitude_Ra", _fmt(facts["ra_pointing"]), "instr.param", "deg")
    _param(satellite, "Attitude_Dec", _fmt(facts["dec_pointing"]), "instr.param", "deg")
    _param(satellite, "Attitude_Roll", _fmt(facts["roll"]), "instr.param", "deg")
    orbit = (
        ("Sat_Longitude", "sat_longitude", "pos.earth.lon", "deg"),
        ("Sat_Latitude", "sat_latitude", "pos.earth.lat", "deg"),
        ("Sat_Altitude", "sat_altitude", "pos.earth.altitude", "km"),
    )
    for name, key, ucd, unit in orbit:
        _param(satellite, name, _fmt(_meta(obs_meta, key)), ucd, unit)


def _where_when(root: ET.Element, facts: Mapping[str, Any]) -> None:
    location = ET.SubElement(ET.SubElement(root, "WhereWhen"), "ObsDataLocation")
    ET.SubElement(location, "ObservatoryLocation", {"id": "GEOLEO"})
    observation = ET.SubElement(location, "ObservationLocation")
    ET.SubElement(observation, "AstroCoordSystem", {"id": "UTC-ICRS-GEO"})
    coords = ET.SubElement(observation, "AstroCoords", {"coord_system_id": "UTC-ICRS-GEO"})
    instant = ET.SubElement(ET.SubElement(coords, "Time", {"unit": "s"}), "TimeInstant")
    ET.SubElement(instant, "ISOTime").text = facts["trigger_time"] or ""
    position = ET.SubElement(coords, "Position2D", {"unit": "deg"})
    ET.SubElement(position, "Name1").text = "RA"
    ET.SubElement(position, "Name2").text = "Dec"
    value = ET.SubElement(position, "Value2")
    ET.SubElement(value, "C1").text = f"{facts['ra']:.4f}"
    ET.SubElement(value, "C2").text = f"{facts['dec']:.4f}"
    ET.SubElement(position, "Error2Radius").text = f"{facts['err90_deg']:.4f}"


def notice_voevent(facts: Mapping[str, Any], obs_meta: Mapping, config: NoticeConfig) -> str:
    """The VOEvent 2.0 XML text of a detected position, shaped like the MXT notices."""
    ET.register_namespace("voe", VOEVENT_NS)
    ET.register_namespace("xsi", XSI_NS)
    root = ET.Element(
        f"{{{VOEVENT_NS}}}VOEvent",
        {
            f"{{{XSI_NS}}}schemaLocation": f"{VOEVENT_NS} {VOEVENT_XSD}",
            "role": "test" if config.alert_tense in ("injection", "mock") else "observation",
            "version": "2.0",
            "ivorn": _ivorn(facts["id"], config.alert_type, facts["quality_flag"]),
        },
    )
    _who(root, facts["alert_datetime"])
    _what(root, facts, obs_meta, config)
    _where_when(root, facts)
    how = ET.SubElement(root, "How")
    ET.SubElement(how, "Description").text = "N2m notice, data from MXT"
    ET.SubElement(
        how, "Reference", {"uri": "https://www.svom.eu/en/mxt-microchannel-x-ray-telescope-en/"}
    )
    citations = ET.SubElement(root, "Citations")
    cited = [f"{AUTHOR_IVORN}#{facts['id']}_{step}" for step in CITED_STEPS]
    if config.alert_type == "update":
        cited.append(_ivorn(facts["id"], "initial", config.initial_quality_flag))
    for ivorn in cited:
        ET.SubElement(citations, "EventIVORN", {"cite": "followup"}).text = ivorn
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def _run(inputs: Mapping[str, Any], calibration: Mapping, config: NoticeConfig) -> dict:
    obs_meta = inputs["obs_meta"]
    if not isinstance(obs_meta, Mapping):
        raise BadInput("obs_meta must be a JSON object")
    facts = notice_facts(inputs["position"], obs_meta, config)
    outputs: dict[str, Any] = {"notice_json": notice_json(facts, config)}
    if facts["detected"]:
        outputs["notice_voevent"] = notice_voevent(facts, obs_meta, config)
    return outputs


BRICK = Brick(
    name="notice",
    version=VERSION,
    inputs=(
        POSITION,
        OBS_META,
    ),
    outputs=(
        NOTICE_JSON,
        NOTICE_VOEVENT.as_optional(),
    ),
    caldb=(),
    config=NoticeConfig,
    run=_run,
)
