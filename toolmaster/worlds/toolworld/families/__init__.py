"""The toolworld families, one module each: seen ones (train, test_seen, test_evolved) and unseen ones."""

from toolmaster.worlds.toolworld.common import FamilySpec
from toolmaster.worlds.toolworld.families import (
    booking,
    cipher,
    cityfacts,
    clock,
    convert,
    currency,
    dates,
    directory,
    geo,
    inventory,
    orders,
    recipes,
    sensors,
    shipping,
    temperature,
    tickets,
)

ALL: tuple[FamilySpec, ...] = (
    convert.FAMILY,
    currency.FAMILY,
    dates.FAMILY,
    directory.FAMILY,
    orders.FAMILY,
    cipher.FAMILY,
    shipping.FAMILY,
    temperature.FAMILY,
    cityfacts.FAMILY,
    clock.FAMILY,
    inventory.FAMILY,
    recipes.FAMILY,
    sensors.FAMILY,
    tickets.FAMILY,
    geo.FAMILY,
    booking.FAMILY,
)
BY_NAME: dict[str, FamilySpec] = {family.name: family for family in ALL}

__all__ = ["ALL", "BY_NAME"]
