"""Every product passed between bricks, declared once.

Bricks reference these objects in their ``inputs`` and ``outputs`` so that a
product's name, file name and kind cannot disagree between the brick that writes it
and the bricks that read it. A use site that tolerates absence takes
``PRODUCT.as_optional()``.
"""

from __future__ import annotations

from bricks.base import Product

L0 = Product("l0", "mxt_l0.fits", "fits")
OBS_META = Product("obs_meta", "mxt_obs_meta.json", "json")
CAL_EVENTS = Product("cal_events", "mxt_cal_evt.fits", "fits")
L1_EVENTS = Product("l1_events", "mxt_l1_evt.fits", "fits")
L2_EVENTS = Product("l2_events", "mxt_l2_evt.fits", "fits")
IMAGE = Product("image", "mxt_image.fits", "fits")
SOURCES = Product("sources", "mxt_srclist.fits", "fits")
POSITION = Product("position", "mxt_position.json", "json")
REGION = Product("region", "mxt_position.reg", "text")
NOTICE_JSON = Product("notice_json", "mxt_notice.json", "json")
NOTICE_VOEVENT = Product("notice_voevent", "mxt_notice.xml", "text")
EXPMAP = Product("expmap", "mxt_expmap.fits", "fits")
LIGHTCURVE = Product("lightcurve", "mxt_lc.fits", "fits")
LIGHTCURVE_FIT = Product("lightcurve_fit", "mxt_lc_fit.json", "json")
SRC_PHA = Product("src_pha", "mxt_src.pha", "fits")
BKG_PHA = Product("bkg_pha", "mxt_bkg.pha", "fits")
ARF = Product("arf", "mxt.arf", "fits")
RMF = Product("rmf", "mxt.rmf", "fits")
QL_IMAGE = Product("ql_image", "mxt_ql_image.png", "png")
QL_LIGHTCURVE = Product("ql_lightcurve", "mxt_ql_lc.png", "png")
QL_SPECTRUM = Product("ql_spectrum", "mxt_ql_spectrum.png", "png")

#: Every product by name; the raw input ``l0`` comes from the archive, not a brick.
CATALOGUE: dict[str, Product] = {
    p.name: p
    for p in (
        L0,
        OBS_META,
        CAL_EVENTS,
        L1_EVENTS,
        L2_EVENTS,
        IMAGE,
        SOURCES,
        POSITION,
        REGION,
        NOTICE_JSON,
        NOTICE_VOEVENT,
        EXPMAP,
        LIGHTCURVE,
        LIGHTCURVE_FIT,
        SRC_PHA,
        BKG_PHA,
        ARF,
        RMF,
        QL_IMAGE,
        QL_LIGHTCURVE,
        QL_SPECTRUM,
    )
}
