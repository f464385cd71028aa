"""The price computation as a pure function: canonical parameters, size rules, the sum."""

from __future__ import annotations

from decimal import Decimal

import pytest

from mescache import mesh, shapes
from mescache.errors import BadPriceParams
from mescache.pricing import PriceInputs, PriceRequest, PricingRule, quote

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
