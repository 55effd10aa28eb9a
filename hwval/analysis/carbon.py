"""CO2 from energy: a carbon-intensity table (gCO2e per kWh, per country and region) and the
arithmetic that turns joules into grams.

The shipped table is ``hwval/analysis/data/carbon_intensity.csv`` (its header names every
source and year). Precedence, highest first: a fixed value (``--carbon-intensity 250``), a
user's CSV in the same format (its rows replace the shipped rows with the same country, region
and year, and add new ones), the shipped table.

Locations are written ``COUNTRY`` or ``COUNTRY/REGION`` (ISO 3166-1 alpha-2 country, case
ignored): ``US/OR``, ``TW/Taipei``, ``DE``, ``WORLD``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

J_PER_KWH = 3.6e6
COLUMNS = ("country", "region", "g_per_kwh", "year", "source")
SHIPPED_NAME = "carbon_intensity.csv"
HOW_TO_GIVE = ("give a value with --carbon-intensity G_PER_KWH or a CSV with --carbon-table FILE "
               "(columns country,region,g_per_kwh,year,source)")


class CarbonError(ValueError):
    """An unknown location, a bad intensity value or a malformed table (one line, what to do)."""


@dataclass(frozen=True)
class Intensity:
    """A carbon intensity and where it came from."""

    g_per_kwh: float
    location: str          # "US/OR", "TW", or "fixed"
    year: int | None
    source: str            # the table's source tag, or "--carbon-intensity"
    table: str             # the file the row came from ("shipped" for hwval's own), or "fixed value"


def emissions_g(energy_j, intensity_g_per_kwh):
    """Emissions in grams of CO2e for ``energy_j`` joules at ``intensity_g_per_kwh``.

    Parameters
    ----------
    energy_j : float or array_like
        Electrical energy, J.
    intensity_g_per_kwh : float or array_like
        Carbon intensity of that electricity, gCO2e/kWh.

    Returns
    -------
    float or ndarray
        gCO2e.

    Notes
    -----
    g = energy_j / 3.6e6 * intensity_g_per_kwh (1 kWh = 3.6e6 J).

    Examples
    --------
    >>> emissions_g(3.6e6, 400.0)
    400.0
    """
    energy = np.asarray(energy_j, dtype=float)
    intensity = np.asarray(intensity_g_per_kwh, dtype=float)
    if np.any(intensity < 0) or not np.all(np.isfinite(intensity)):
        raise CarbonError(f"carbon intensity must be a finite value >= 0 gCO2e/kWh (got {intensity_g_per_kwh})")
    out = energy / J_PER_KWH * intensity
    return float(out) if out.ndim == 0 else out


def parse_location(location: str) -> tuple[str, str]:
    """``"US/OR"`` -> ``("US", "OR")``; ``"de"`` -> ``("DE", "")``."""
    country, _, region = location.strip().partition("/")
    country = country.strip().upper()
    if not country:
        raise CarbonError(f"location {location!r}: expected COUNTRY or COUNTRY/REGION (e.g. US/OR, TW, DE)")
    return country, region.strip()


@dataclass(frozen=True)
class Row:
    country: str
    region: str
    g_per_kwh: float
    year: int | None
    source: str
    table: str

    @property
    def key(self) -> tuple[str, str, int | None]:
        return self.country, self.region.casefold(), self.year

    @property
    def location(self) -> str:
        return f"{self.country}/{self.region}" if self.region else self.country


def read_table(text: str, name: str) -> list[Row]:
    """Parse a table in the shipped format; ``name`` labels errors (``FILE:LINE: ...``)."""
    lines = text.splitlines()
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise CarbonError(f"{name}: no header line (expected {','.join(COLUMNS)})")
    header_no, header = numbered[0]
    columns = [c.strip() for c in next(csv.reader([header]))]
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise CarbonError(f"{name}:{header_no}: missing column(s) {', '.join(missing)} (expected "
                          f"{','.join(COLUMNS)})")
    rows: list[Row] = []
    seen: dict[tuple, int] = {}
    reader = csv.DictReader(io.StringIO("\n".join(line for _, line in numbered)), fieldnames=columns)
    next(reader)  # the header
    for (line_no, _), rec in zip(numbered[1:], reader):
        where = f"{name}:{line_no}"
        country = (rec.get("country") or "").strip().upper()
        if not country:
            raise CarbonError(f"{where}: empty country (expected an ISO 3166-1 alpha-2 code or WORLD)")
        try:
            value = float(rec.get("g_per_kwh") or "")
        except ValueError:
            raise CarbonError(f"{where}: g_per_kwh {rec.get('g_per_kwh')!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise CarbonError(f"{where}: g_per_kwh must be a finite value >= 0 (got {value})")
        year_text = (rec.get("year") or "").strip()
        try:
            year = int(year_text) if year_text else None
        except ValueError:
            raise CarbonError(f"{where}: year {year_text!r} is not a whole number") from None
        row = Row(country, (rec.get("region") or "").strip(), value, year, (rec.get("source") or "").strip(), name)
        if row.key in seen:
            what = f"{row.location} {year}" if year is not None else row.location
            raise CarbonError(f"{where}: {what} repeats line {seen[row.key]}")
        seen[row.key] = line_no
        rows.append(row)
    return rows


def shipped_rows() -> list[Row]:
    text = (resources.files(__package__) / "data" / SHIPPED_NAME).read_text(encoding="utf-8")
    return read_table(text, "shipped")


class CarbonTable:
    """Rows by (country, region, year); lookups take the latest year unless one is asked for."""

    def __init__(self, rows: Iterable[Row]) -> None:
        self._rows: dict[tuple, Row] = {}
        for row in rows:
            self._rows[row.key] = row  # later rows (a user's) replace earlier (shipped) ones

    @classmethod
    def load(cls, user_table: str | Path | None = None) -> "CarbonTable":
        """The shipped table, overlaid with ``user_table`` when given."""
        rows = shipped_rows()
        if user_table is not None:
            path = Path(user_table)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CarbonError(f"{path}: cannot read the carbon table ({exc})") from None
            rows += read_table(text, str(path))
        return cls(rows)

    def locations(self) -> list[str]:
        return sorted({row.location for row in self._rows.values()})

    def lookup(self, location: str, year: int | None = None) -> Intensity:
        country, region = parse_location(location)
        matches = [r for r in self._rows.values() if r.country == country and r.region.casefold() == region.casefold()]
        if not matches:
            raise CarbonError(self._unknown(country, region))
        if year is not None:
            exact = [r for r in matches if r.year == year]
            if not exact:
                years = ", ".join(str(r.year) for r in sorted(matches, key=lambda r: r.year or 0))
                raise CarbonError(f"no carbon intensity for {matches[0].location} in {year} (the table has: "
                                  f"{years}); {HOW_TO_GIVE}")
            row = exact[0]
        else:
            row = max(matches, key=lambda r: r.year or 0)
        return Intensity(row.g_per_kwh, row.location, row.year, row.source, row.table)

    def _unknown(self, country: str, region: str) -> str:
        countries = sorted({r.country for r in self._rows.values()})
        if country not in countries:
            return (f"no carbon intensity for country {country!r} in the table; {HOW_TO_GIVE}; countries in the "
                    f"table: {', '.join(countries)}")
        regions = sorted({r.region for r in self._rows.values() if r.country == country and r.region})
        known = f"regions of {country} in the table: {', '.join(regions)}" if regions else \
            f"the table has {country} as a whole only (use {country})"
        return f"no carbon intensity for {country}/{region} in the table; {HOW_TO_GIVE}; {known}"


def resolve_intensity(location: str | None = None, *, fixed_g_per_kwh: float | None = None,
                      user_table: str | Path | None = None, year: int | None = None,
                      table: CarbonTable | None = None) -> Intensity:
    """The intensity to use, by precedence: a fixed value, then the (user-overlaid) table."""
    if fixed_g_per_kwh is not None:
        if not math.isfinite(fixed_g_per_kwh) or fixed_g_per_kwh < 0:
            raise CarbonError(f"--carbon-intensity must be a finite value >= 0 gCO2e/kWh (got {fixed_g_per_kwh})")
        return Intensity(float(fixed_g_per_kwh), location or "fixed", None, "--carbon-intensity", "fixed value")
    if location is None:
        raise CarbonError(f"no location for the carbon intensity: name one (e.g. US/OR, TW, DE) or {HOW_TO_GIVE}")
    table = table or CarbonTable.load(user_table)
    return table.lookup(location, year)


@dataclass(frozen=True)
class EmissionsRow:
    run: str
    location: str
    energy_j: float
    g_per_kwh: float
    emissions_g: float
    year: int | None
    source: str

    @property
    def energy_kwh(self) -> float:
        return self.energy_j / J_PER_KWH


def emissions_table(energies_j: Sequence[tuple[str, float]], intensities: Sequence[Intensity]) -> list[EmissionsRow]:
    """One row per (run, location): the studies' "same training, other places" comparison.

    ``energies_j`` pairs a label (a run, a meter, an epoch) with its energy in joules.
    """
    return [EmissionsRow(label, it.location, float(e), it.g_per_kwh, emissions_g(e, it.g_per_kwh), it.year,
                         it.source)
            for label, e in energies_j for it in intensities]


def format_emissions(rows: Sequence[EmissionsRow]) -> str:
    """A plain-text table of :func:`emissions_table` rows."""
    header = ("run", "location", "energy_kWh", "gCO2e/kWh", "gCO2e", "year", "source")
    body = [(r.run, r.location, f"{r.energy_kwh:.6g}", f"{r.g_per_kwh:g}", f"{r.emissions_g:.4g}",
             str(r.year or ""), r.source) for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in (header, *body))
