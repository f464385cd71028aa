"""What it costs to make a 3D model in a material and size: parameters, rules, the sum.

A price is computed from the model's mesh (resized for sized kinds such as rings), the
material's density and price per gram, and the pricing rule of the model's kind::

    metal     = volume * density * (1 + casting loss) * price per gram
    finishing = surface * finishing per cm²
    total     = max(minimum, metal + finishing + labour + the model's design price)

`PriceRequest.params()` is the canonical parameter string of the cache key, so requests
that mean the same (``size=17``, ``size=17.0``, ``size=17.00``) share one key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Final

from pydantic import TypeAdapter
from typing_extensions import TypedDict

from mescache import mesh
from mescache.errors import BadPriceParams

DEFAULT_RULE: Final = "*"  # the rule of kinds without one of their own
_NO_SIZE: Final = "base"
_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class PriceRequest:
    """One price asked for: a model, a material and the parameters."""

    model_id: int
    material_id: int
    size: Decimal | None = None  # inner diameter in mm, for sized kinds; None: as modelled

    def params(self) -> str:
        """The parameters as they appear in the price's key (`size=...`)."""
        return "size=" + (_NO_SIZE if self.size is None else canonical_size(self.size))

    def member(self) -> str:
        """How the request counter names this price: ``{model}:{material}:{params}``."""
        return f"{self.model_id}:{self.material_id}:{self.params()}"

    @classmethod
    def from_member(cls, member: str) -> PriceRequest:
        """The request a counter member names; BadPriceParams if it names none."""
        try:
            model, material, params = member.split(":", 2)
            name, _, value = params.partition("=")
            if name != "size":
                raise ValueError(params)
            size = None if value == _NO_SIZE else Decimal(value)
            request = cls(int(model), int(material), size)
        except (ValueError, InvalidOperation):
            raise BadPriceParams(f"not a price request: {member!r}") from None
        if request.member() != member:
            raise BadPriceParams(f"not a canonical price request: {member!r}")
        return request


def canonical_size(size: Decimal) -> str:
    """``17.50`` → ``17.5``, ``1.7E+1`` → ``17``."""
    return format(size.normalize(), "f")


@dataclass(frozen=True, slots=True)
class PricingRule:
    """A row of ``pricing_rules``: labour, finishing, casting loss, minimum, sizes."""

    kind: str
    labour: Decimal
    finishing_per_cm2: Decimal
    casting_loss: Decimal
    minimum_price: Decimal
    size_base: Decimal | None = None
    size_min: Decimal | None = None
    size_max: Decimal | None = None
    size_step: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PriceInputs:
    """The rows a price is computed from."""

    kind: str
    design_price: Decimal  # the model's base_price
    volume_cm3: Decimal  # used when the model has no mesh
    mesh: bytes | None
    density_g_cm3: Decimal
    price_per_gram: Decimal
    rule: PricingRule


class Quote(TypedDict):
    """A computed price with what it is made of (money in the material's currency)."""

    model_id: int
    material_id: int
    kind: str
    size: Decimal | None
    volume_cm3: Decimal
    surface_cm2: Decimal
    weight_g: Decimal
    metal: Decimal
    finishing: Decimal
    labour: Decimal
    design: Decimal
    total: Decimal


_QUOTE = TypeAdapter(Quote)


def dump_quote(quote: Quote) -> bytes:
    """A quote as the cached JSON bytes."""
    return _QUOTE.dump_json(quote)


def _kind_name(kind: str) -> str:
    return kind if kind.endswith("s") else kind + "s"


def size_delta_mm(rule: PricingRule, kind: str, size: Decimal | None) -> float:
    """How far to move a sized model's vertices off its axis; BadPriceParams if the size
    does not fit the kind."""
    if size is None:
        return 0.0
    if rule.size_base is None or rule.size_min is None or rule.size_max is None:
        raise BadPriceParams(f"{_kind_name(kind)} have no size")
    step = rule.size_step or Decimal(1)
    if not rule.size_min <= size <= rule.size_max or (size - rule.size_min) % step != 0:
        raise BadPriceParams(
            f"size {canonical_size(size)} does not fit {_kind_name(kind)}: inner diameter"
            f" {canonical_size(rule.size_min)} to {canonical_size(rule.size_max)} mm"
            f" in steps of {canonical_size(step)}"
        )
    return float(size - rule.size_base) / 2


def _measures(inputs: PriceInputs, delta_mm: float) -> mesh.Measures:
    if inputs.mesh is not None:
        return mesh.measure(mesh.widen(mesh.decode(inputs.mesh), delta_mm))
    # Without geometry: the stored volume, the surface of a ball of that volume, and a
    # resized ring's volume growing with its circumference.
    volume = float(inputs.volume_cm3) * 1000
    base = inputs.rule.size_base
    if base is not None and delta_mm:
        volume *= (float(base) + 2 * delta_mm) / float(base)
    return mesh.Measures(volume, (36 * math.pi * volume * volume) ** (1 / 3))


def _money(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def measure(inputs: PriceInputs, size: Decimal | None) -> mesh.Measures:
    """The geometry a price at `size` is computed from: the costly part of a quote, the same
    for every material (BadPriceParams if the size does not fit the kind)."""
    return _measures(inputs, size_delta_mm(inputs.rule, inputs.kind, size))


def quote(
    request: PriceRequest, inputs: PriceInputs, measures: mesh.Measures | None = None
) -> Quote:
    """The price of `request` from its rows (CPU work: decode, resize and measure the mesh;
    `measures`, from `measure` of the same model and size, saves it)."""
    rule = inputs.rule
    if measures is None:
        measures = measure(inputs, request.size)
    volume = Decimal(repr(measures.volume_mm3 / 1000)).quantize(Decimal("0.001"))
    surface = Decimal(repr(measures.surface_mm2 / 100)).quantize(_CENT)
    weight = (volume * inputs.density_g_cm3).quantize(Decimal("0.001"))
    metal = _money(weight * (1 + rule.casting_loss) * inputs.price_per_gram)
    finishing = _money(surface * rule.finishing_per_cm2)
    labour, design = _money(rule.labour), _money(inputs.design_price)
    total = max(_money(rule.minimum_price), metal + finishing + labour + design)
    return Quote(
        model_id=request.model_id,
        material_id=request.material_id,
        kind=inputs.kind,
        size=None if request.size is None else Decimal(canonical_size(request.size)),
        volume_cm3=volume,
        surface_cm2=surface,
        weight_g=weight,
        metal=metal,
        finishing=finishing,
        labour=labour,
        design=design,
        total=total,
    )
