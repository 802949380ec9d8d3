"""Example tools for a user-defined world: plain functions, no ToolMaster imports needed.

``weather.yaml`` next to this file turns them into a world (``load_custom_world``). The data is a small
fixed table so that tasks have checkable answers. Things worth noticing:

- ``convert_temp`` takes a ``spec`` whose format the YAML description does not document; a wrong spec
  raises an error that says what is accepted, which is what a model learns from during trials;
- ``set_alert`` declares a ``state`` keyword: it receives the episode state (a sandbox copy during trials,
  the real state during execution) and its changes persist between execution calls;
- raising an exception is the way to report a bad argument: the environment turns it into an observation.
"""

from __future__ import annotations

import re
from typing import Any

TEMPERATURES_C: dict[str, float] = {"oslo": 4.0, "rome": 18.5, "cairo": 31.0, "lima": 19.0, "reykjavik": -2.5}

FORECAST_HIGHS_C: dict[str, list[float]] = {
    "oslo": [5.0, 7.5, 3.0, 6.0, 8.0],
    "rome": [19.0, 22.5, 21.0, 17.5, 20.0],
    "cairo": [32.0, 33.5, 35.0, 34.0, 31.5],
    "lima": [20.0, 19.5, 21.0, 22.0, 20.5],
    "reykjavik": [-1.0, 0.5, -3.0, 1.0, 2.0],
}

_SPEC = re.compile(r"^\s*([CFK])\s*->\s*([CFK])\s*$")


def _city_key(city: str) -> str:
    key = city.strip().lower()
    if key not in TEMPERATURES_C:
        known = ", ".join(name.title() for name in TEMPERATURES_C)
        raise ValueError(f"unknown city {city!r}; known cities: {known}")
    return key


def get_temperature(city: str) -> float:
    """Current temperature of a city, in degrees Celsius."""
    return TEMPERATURES_C[_city_key(city)]


def forecast(city: str, days: int = 3) -> list[float]:
    """Daily high temperatures (Celsius) for the next ``days`` days (1 to 5)."""
    if not 1 <= days <= 5:
        raise ValueError(f"days must be between 1 and 5, got {days}")
    return FORECAST_HIGHS_C[_city_key(city)][:days]


def convert_temp(spec: str, value: float) -> float:
    """Convert a temperature; ``spec`` is '<from>-><to>' with units C, F or K, e.g. 'C->F'."""
    match = _SPEC.match(spec.upper())
    if match is None:
        raise ValueError(f"bad spec {spec!r}: expected '<from>-><to>' with units C, F or K, e.g. 'C->F'")
    source, target = match.groups()
    celsius = {"C": value, "F": (value - 32.0) * 5.0 / 9.0, "K": value - 273.15}[source]
    result = {"C": celsius, "F": celsius * 9.0 / 5.0 + 32.0, "K": celsius + 273.15}[target]
    return round(result, 2)


def set_alert(city: str, below: float, state: dict[str, Any]) -> str:
    """Register an alert for when ``city`` drops below ``below`` degrees Celsius (stateful)."""
    key = _city_key(city)
    alerts: list[dict[str, Any]] = state.setdefault("alerts", [])
    if any(a["city"] == key and a["below"] == below for a in alerts):
        raise ValueError(f"an alert for {city} below {below} already exists")
    alerts.append({"city": key, "below": below})
    triggered = TEMPERATURES_C[key] < below
    return f"alert #{len(alerts)} set for {key.title()} below {below:g} C; {len(alerts)} alert(s) active" + (
        "; it is already triggered" if triggered else ""
    )
