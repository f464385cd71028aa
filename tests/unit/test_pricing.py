"""The price computation as a pure function: canonical parameters, size rules, the sum."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

import pytest

from devtools import shapes
from mescache import mesh
from mescache.errors import BadPriceParams
from mescache.pricing import (
    PriceInputs,
    PriceRequest,
    PricingRule,
    canonical_size,
    dump_quote,
    quote,
    size_delta_mm,
)

RING_RULE = PricingRule(
    kind="ring",
    labour=Decimal("60.00"),
    finishing_per_cm2=Decimal("2.0000"),
    casting_loss=Decimal("0.06"),
    minimum_price=Decimal("80.00"),
    size_base=Decimal("17.0"),
    size_min=Decimal("14.0"),
    size_max=Decimal("24.0"),
    size_step=Decimal("0.5"),
)
PENDANT_RULE = PricingRule("pendant", Decimal(50), Decimal("1.8"), Decimal("0.05"), Decimal(60))


def ring_inputs(price_per_gram: str = "62.00", rule: PricingRule = RING_RULE) -> PriceInputs:
    return PriceInputs(
        kind="ring",
        design_price=Decimal("100.00"),
        volume_cm3=Decimal("0.187"),
        mesh=mesh.encode(shapes.ring(17.0, 2.0)),
        density_g_cm3=Decimal("13.0"),
        price_per_gram=Decimal(price_per_gram),
        rule=rule,
    )


def test_equal_requests_share_one_canonical_key() -> None:
    spellings = [Decimal("17"), Decimal("17.0"), Decimal("17.00"), Decimal("1.7E+1")]
    assert {PriceRequest(1, 2, s).params() for s in spellings} == {"size=17"}
    assert PriceRequest(1, 2, Decimal("20")).params() == "size=20"
    assert PriceRequest(1, 2, None).params() == "size=base"
    request = PriceRequest(3, 4, Decimal("17.50"))
    assert request.member() == "3:4:size=17.5"
    assert PriceRequest.from_member(request.member()) == PriceRequest(3, 4, Decimal("17.5"))
    assert PriceRequest.from_member("3:4:size=base") == PriceRequest(3, 4, None)
    for junk in ("", "3:4", "x:4:size=1", "3:4:colour=red", "3:4:size=17.50", "3:4:size=abc"):
        with pytest.raises(BadPriceParams):
            PriceRequest.from_member(junk)


def test_the_total_is_metal_finishing_labour_and_design() -> None:
    q = quote(PriceRequest(1, 2), ring_inputs())
    assert q["volume_cm3"] == pytest.approx(Decimal("0.187"), abs=Decimal("0.002"))
    assert q["weight_g"] == (q["volume_cm3"] * 13).quantize(Decimal("0.001"))
    assert q["metal"] == (q["weight_g"] * Decimal("1.06") * 62).quantize(Decimal("0.01"))
    assert q["finishing"] == (q["surface_cm2"] * 2).quantize(Decimal("0.01"))
    assert q["total"] == q["metal"] + q["finishing"] + Decimal("60.00") + Decimal("100.00")


def test_a_larger_ring_costs_more_and_a_cheap_one_costs_the_minimum() -> None:
    base = quote(PriceRequest(1, 2), ring_inputs())
    larger = quote(PriceRequest(1, 2, Decimal("20.5")), ring_inputs())
    assert larger["weight_g"] > base["weight_g"]
    assert larger["total"] > base["total"]
    assert quote(PriceRequest(1, 2, Decimal("17")), ring_inputs())["total"] == base["total"]
    cheap_rule = PricingRule(
        "ring",
        Decimal(0),
        Decimal(0),
        Decimal(0),
        Decimal("500.00"),
        Decimal(17),
        Decimal(14),
        Decimal(24),
        Decimal("0.5"),
    )
    assert quote(PriceRequest(1, 2), ring_inputs("0.10", cheap_rule))["total"] == Decimal("500.00")


@pytest.mark.parametrize("size", ["13.5", "24.5", "17.3"])
def test_a_size_that_does_not_fit_the_kind_is_refused(size: str) -> None:
    with pytest.raises(BadPriceParams, match="does not fit rings: inner diameter 14 to 24 mm"):
        quote(PriceRequest(1, 2, Decimal(size)), ring_inputs())


def test_an_unsized_kind_refuses_a_size() -> None:
    pendant = PriceInputs(
        "pendant", Decimal(10), Decimal("0.5"), None, Decimal(10), Decimal(1), PENDANT_RULE
    )
    with pytest.raises(BadPriceParams, match="pendants have no size"):
        quote(PriceRequest(1, 2, Decimal(17)), pendant)
    # without a mesh the stored volume prices it
    assert quote(PriceRequest(1, 2), pendant)["volume_cm3"] == Decimal("0.500")


def no_mesh_ring() -> PriceInputs:
    return PriceInputs(
        "ring",
        Decimal("100.00"),
        Decimal("0.187"),
        None,
        Decimal("13.0"),
        Decimal("62.00"),
        RING_RULE,
    )


def test_a_quote_is_pinned_to_its_figures() -> None:
    # Worked by hand: size 20.5 moves the band 1.75 mm out, the volume grows by
    # (9.5 + 1.75) / 9.5; weight = volume * 13; metal = weight * 1.06 * 62.
    assert quote(PriceRequest(1, 2, Decimal("20.50")), ring_inputs()) == {
        "model_id": 1,
        "material_id": 2,
        "kind": "ring",
        "size": Decimal("20.5"),
        "volume_cm3": Decimal("0.220"),
        "surface_cm2": Decimal("4.43"),
        "weight_g": Decimal("2.860"),
        "metal": Decimal("187.96"),
        "finishing": Decimal("8.86"),
        "labour": Decimal("60.00"),
        "design": Decimal("100.00"),
        "total": Decimal("356.82"),
    }


def test_without_a_mesh_a_resized_ring_grows_with_its_circumference() -> None:
    # 0.187 cm³ at 17 mm; at 19 mm (1 mm further out) 0.187 * 19 / 17 = 0.209 cm³, and the
    # surface is that of a ball of that volume: (36 π V²)^(1/3) = 170.3 mm².
    resized = quote(PriceRequest(1, 2, Decimal(19)), no_mesh_ring())
    assert (resized["volume_cm3"], resized["surface_cm2"]) == (Decimal("0.209"), Decimal("1.70"))
    assert (resized["weight_g"], resized["metal"]) == (Decimal("2.717"), Decimal("178.56"))
    assert resized["total"] == Decimal("341.96")
    smaller = quote(PriceRequest(1, 2, Decimal(15)), no_mesh_ring())
    assert smaller["volume_cm3"] == Decimal("0.165")  # 0.187 * 15 / 17
    as_modelled = quote(PriceRequest(1, 2, Decimal(17)), no_mesh_ring())
    assert (as_modelled["volume_cm3"], as_modelled["surface_cm2"]) == (
        Decimal("0.187"),
        Decimal("1.58"),
    )


def test_the_offset_from_the_modelled_size_is_half_the_diameters_difference() -> None:
    assert size_delta_mm(RING_RULE, "ring", None) == 0.0
    assert size_delta_mm(RING_RULE, "ring", Decimal("20.5")) == 1.75
    assert size_delta_mm(RING_RULE, "ring", Decimal(14)) == -1.5  # the smallest
    assert size_delta_mm(RING_RULE, "ring", Decimal(24)) == 3.5  # and the largest
    stepless = PricingRule(
        "ring",
        Decimal(1),
        Decimal(1),
        Decimal(0),
        Decimal(0),
        Decimal(17),
        Decimal(14),
        Decimal(24),
    )
    assert size_delta_mm(stepless, "ring", Decimal(18)) == 0.5  # whole millimetres by default
    with pytest.raises(BadPriceParams, match=r"in steps of 1$"):
        size_delta_mm(stepless, "ring", Decimal("18.5"))
    no_base, no_min = replace(RING_RULE, size_base=None), replace(RING_RULE, size_min=None)
    for rule in (no_base, no_min, replace(RING_RULE, size_max=None)):
        with pytest.raises(BadPriceParams, match=r"^rings have no size$"):
            size_delta_mm(rule, "ring", Decimal(17))
    with pytest.raises(BadPriceParams, match=r"^bracelets have no size$"):
        size_delta_mm(PENDANT_RULE, "bracelets", Decimal(17))


def test_a_refused_size_says_what_fits() -> None:
    with pytest.raises(BadPriceParams) as refused:
        quote(PriceRequest(1, 2, Decimal("24.50")), ring_inputs())
    assert str(refused.value) == (
        "size 24.5 does not fit rings: inner diameter 14 to 24 mm in steps of 0.5"
    )


def test_money_is_rounded_half_up_to_the_cent_and_the_minimum_holds() -> None:
    odd = replace(RING_RULE, labour=Decimal("10.005"), minimum_price=Decimal("0.004"))
    q = quote(PriceRequest(1, 2), replace(no_mesh_ring(), design_price=Decimal("0.125"), rule=odd))
    assert (q["labour"], q["design"]) == (Decimal("10.01"), Decimal("0.13"))
    assert q["total"] == q["metal"] + q["finishing"] + Decimal("10.14")
    floor = replace(RING_RULE, minimum_price=Decimal("999.995"))
    assert quote(PriceRequest(1, 2), replace(no_mesh_ring(), rule=floor))["total"] == Decimal(
        "1000.00"
    )


def test_a_counter_member_names_exactly_one_request() -> None:
    assert PriceRequest.from_member("3:4:size=17.5") == PriceRequest(3, 4, Decimal("17.5"))
    assert PriceRequest.from_member("3:4:size=base").size is None
    for junk, reason in [
        ("3:4:colour=red", "^not a price request: '3:4:colour=red'$"),
        ("3:4:size=1:2", "^not a price request"),
        ("3:4:size=17.50", "^not a canonical price request: '3:4:size=17.50'$"),
        ("03:4:size=17", "^not a canonical price request"),
    ]:
        with pytest.raises(BadPriceParams, match=reason):
            PriceRequest.from_member(junk)


def test_canonical_sizes_drop_trailing_zeros_and_exponents() -> None:
    assert canonical_size(Decimal("17.50")) == "17.5"
    assert canonical_size(Decimal("1.7E+1")) == "17"
    assert canonical_size(Decimal("2E+1")) == "20"
    assert canonical_size(Decimal("0.50")) == "0.5"


def test_a_quote_dumps_as_the_json_the_api_serves() -> None:
    q = quote(PriceRequest(1, 2, Decimal(19)), no_mesh_ring())
    body = json.loads(dump_quote(q))
    assert body["size"] == "19"
    assert body["total"] == "341.96"
    assert body["kind"] == "ring"
    assert set(body) == set(q)


def test_volumes_are_converted_to_the_cubic_centimetre() -> None:
    block = replace(no_mesh_ring(), volume_cm3=Decimal("10.000"))
    assert quote(PriceRequest(1, 2), block)["volume_cm3"] == Decimal("10.000")
    # 20 mm moves the band 1.5 mm out: 10 * (17 + 3) / 17 = 11.765 cm³
    assert quote(PriceRequest(1, 2, Decimal(20)), block)["volume_cm3"] == Decimal("11.765")
    cube = mesh.Mesh(
        [(x, y, z) for x in (0.0, 10.0) for y in (0.0, 10.0) for z in (0.0, 10.0)],
        [
            t
            for a, b, c, d in [
                (0, 1, 3, 2),
                (4, 6, 7, 5),
                (0, 4, 5, 1),
                (2, 3, 7, 6),
                (0, 2, 6, 4),
                (1, 5, 7, 3),
            ]
            for t in ((a, b, c), (a, c, d))
        ],
    )
    meshed = replace(block, mesh=mesh.encode(cube))
    assert quote(PriceRequest(1, 2), meshed)["volume_cm3"] == Decimal("1.000")
    assert quote(PriceRequest(1, 2), meshed)["surface_cm2"] == Decimal("6.00")


def test_sizes_step_from_the_smallest_one() -> None:
    offset = replace(RING_RULE, size_min=Decimal("14.2"))
    assert size_delta_mm(offset, "ring", Decimal("14.7")) == pytest.approx(-1.15)
    with pytest.raises(BadPriceParams, match="does not fit"):
        size_delta_mm(offset, "ring", Decimal("15"))
