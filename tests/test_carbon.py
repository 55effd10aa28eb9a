"""CO2 from energy: the arithmetic against hand computation, the shipped table, lookups and
their errors, and which source wins when several are given."""

from __future__ import annotations

import numpy as np
import pytest

from hwval.analysis.carbon import (CarbonError, CarbonTable, emissions_g, emissions_table, format_emissions,
                                   parse_location, resolve_intensity, shipped_rows)


def test_one_kilowatt_hour_at_400_g_is_400_g():
    assert emissions_g(3.6e6, 400.0) == 400.0


def test_emissions_arithmetic_by_hand():
    # 250 W for 2 h = 0.5 kWh = 1.8e6 J; at 288.2 g/kWh: 144.1 g
    assert emissions_g(250.0 * 2 * 3600, 288.2) == pytest.approx(144.1, rel=1e-12)
    # 1 J at 1000 g/kWh = 1000 / 3.6e6 g
    assert emissions_g(1.0, 1000.0) == pytest.approx(2.777777777777778e-4, rel=1e-12)
    assert emissions_g(0.0, 500.0) == 0.0
    arr = emissions_g(np.array([3.6e6, 7.2e6]), 100.0)
    assert isinstance(arr, np.ndarray) and arr.tolist() == [100.0, 200.0]


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_intensities_are_refused(bad):
    with pytest.raises(CarbonError, match="must be a finite value >= 0"):
        emissions_g(1.0, bad)
    with pytest.raises(CarbonError, match=r"--carbon-intensity must be a finite value >= 0 gCO2e/kWh"):
        resolve_intensity("US/OR", fixed_g_per_kwh=bad)


def test_the_shipped_table_has_the_seed_study_locations_with_sources():
    table = CarbonTable.load()
    oregon, carolina, taipei = (table.lookup(loc) for loc in ("US/OR", "US/SC", "TW/Taipei"))
    # eGRID2023 subregion rates, lb CO2e/MWh -> g/kWh (x 0.45359237), by hand
    assert oregon.g_per_kwh == round(635.3 * 0.45359237, 1) == 288.2
    assert carolina.g_per_kwh == round(596.3 * 0.45359237, 1) == 270.5
    assert (oregon.year, oregon.source, oregon.table) == (2023, "egrid2023", "shipped")
    assert (taipei.g_per_kwh, taipei.year, taipei.source) == (494.0, 2023, "moea-tw")
    for loc in ("WORLD", "CN", "IN", "DE", "FR", "US", "BR", "AU", "CA", "NO"):
        it = table.lookup(loc)
        assert 0 < it.g_per_kwh < 1000 and it.year and it.source


def test_us_national_and_added_countries_by_hand():
    table = CarbonTable.load()
    # eGRID2023 rev2 US average, 770.884 lb CO2e/MWh; eGRID2022's 823.1 lb CO2/MWh stays for 2022
    us = table.lookup("US")
    assert (us.g_per_kwh, us.year, us.source) == (round(770.884 * 0.45359237, 1), 2023, "egrid2023") == (349.7, 2023,
                                                                                                      "egrid2023")
    assert table.lookup("US", year=2022).g_per_kwh == round(823.1 * 0.45359237, 1) == 373.4
    # Ember Europe 2023 (237.59 g/kWh) and Ember 2022 (512.81) rounded to whole grams like OWID's table
    gb, jp = table.lookup("GB"), table.lookup("JP")
    assert (gb.g_per_kwh, gb.year, gb.source) == (238.0, 2023, "ember-eu-2023")
    assert (jp.g_per_kwh, jp.year, jp.source) == (513.0, 2022, "ember-2022")
    # the countries once cut off after IR are there
    for loc in ("IT", "JP", "KR", "NL", "PL", "ES", "SE", "GB", "ZA", "MX"):
        assert table.lookup(loc).g_per_kwh > 0


def test_every_source_tag_in_the_shipped_table_is_described_in_its_header():
    from importlib import resources

    text = (resources.files("hwval.analysis") / "data" / "carbon_intensity.csv").read_text(encoding="utf-8")
    described = {line[1:].split()[0] for line in text.splitlines()
                 if line.startswith("#   ") and line[4:5].strip()}  # "#   tag  text"; continuations indent more
    used = {row.source for row in shipped_rows()}
    assert used and used <= described, used - described
    assert "LIFECYCLE" in text and "DIRECT" in text  # the basis of each source is said


def test_lookup_is_case_blind_takes_the_latest_year_or_the_one_asked():
    table = CarbonTable.load()
    assert table.lookup("tw").year == 2023
    assert table.lookup("TW", year=2017).g_per_kwh == 554.0
    # one grid: Taipei's figure is the national one in every year the table has
    assert all(table.lookup("TW/Taipei", year=y).g_per_kwh == table.lookup("TW", year=y).g_per_kwh
               for y in range(2017, 2024))
    assert table.lookup("us/or") == table.lookup("US/OR")
    with pytest.raises(CarbonError) as info:
        table.lookup("TW", year=1999)
    assert str(info.value).startswith("no carbon intensity for TW in 1999 (the table has: 2017, 2018, 2019, "
                                      "2020, 2021, 2022, 2023); give a value with --carbon-intensity")


def test_unknown_locations_say_how_to_give_a_value():
    table = CarbonTable.load()
    with pytest.raises(CarbonError) as info:
        table.lookup("XX")
    msg = str(info.value)
    assert msg.startswith("no carbon intensity for country 'XX' in the table; give a value with "
                          "--carbon-intensity G_PER_KWH or a CSV with --carbon-table FILE "
                          "(columns country,region,g_per_kwh,year,source); countries in the table: AE, AR, ")
    assert "\n" not in msg
    with pytest.raises(CarbonError, match=r"no carbon intensity for US/ZZ .*regions of US in the table: CA, "
                                          r"CAMX, NWPP, OR, RFCE, RFCW, SC, SRVC$"):
        table.lookup("US/ZZ")
    with pytest.raises(CarbonError, match=r"the table has DE as a whole only \(use DE\)$"):
        table.lookup("DE/Bavaria")
    with pytest.raises(CarbonError, match="expected COUNTRY or COUNTRY/REGION"):
        parse_location("/OR")
    with pytest.raises(CarbonError, match="no location for the carbon intensity"):
        resolve_intensity(None)


def test_precedence_fixed_value_then_user_file_then_shipped(tmp_path):
    user = tmp_path / "mine.csv"
    user.write_text("# our lab's supplier contract\n"
                    "country,region,g_per_kwh,year,source\n"
                    "US,OR,120,2023,utility-contract\n"   # replaces the shipped 2023 US/OR row
                    "XX,Lab,42,,measured\n")              # adds a new location, no year
    shipped = resolve_intensity("US/OR")
    assert shipped.g_per_kwh == 288.2 and shipped.table == "shipped"
    from_user = resolve_intensity("US/OR", user_table=user)
    assert (from_user.g_per_kwh, from_user.source, from_user.table) == (120.0, "utility-contract", str(user))
    assert resolve_intensity("XX/lab", user_table=user).g_per_kwh == 42.0
    # rows the user file does not name still come from the shipped table
    assert resolve_intensity("US/SC", user_table=user).g_per_kwh == 270.5
    fixed = resolve_intensity("US/OR", fixed_g_per_kwh=250.0, user_table=user)
    assert (fixed.g_per_kwh, fixed.source, fixed.table) == (250.0, "--carbon-intensity", "fixed value")
    assert resolve_intensity(None, fixed_g_per_kwh=0.0).g_per_kwh == 0.0


@pytest.mark.parametrize("text,message", [
    ("", "no header line (expected country,region,g_per_kwh,year,source)"),
    ("country,g_per_kwh\nUS,3\n", "1: missing column(s) region, year, source (expected "
                                  "country,region,g_per_kwh,year,source)"),
    ("country,region,g_per_kwh,year,source\nUS,,abc,2020,x\n", "2: g_per_kwh 'abc' is not a number"),
    ("country,region,g_per_kwh,year,source\nUS,,-5,2020,x\n", "2: g_per_kwh must be a finite value >= 0 (got -5.0)"),
    ("country,region,g_per_kwh,year,source\n,,5,2020,x\n", "2: empty country (expected an ISO 3166-1 alpha-2 "
                                                           "code or WORLD)"),
    ("country,region,g_per_kwh,year,source\nUS,,5,20x0,x\n", "2: year '20x0' is not a whole number"),
    ("# c\ncountry,region,g_per_kwh,year,source\nUS,OR,5,2020,x\n\nUS,or,6,2020,y\n", "5: US/or 2020 repeats line 3"),
])
def test_malformed_user_tables_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(CarbonError) as info:
        CarbonTable.load(path)
    expected = f"{path}:{message}" if message[0].isdigit() else f"{path}: {message}"
    assert str(info.value) == expected


def test_unreadable_user_table(tmp_path):
    with pytest.raises(CarbonError, match=r"missing\.csv: cannot read the carbon table"):
        CarbonTable.load(tmp_path / "missing.csv")


def test_per_run_per_location_table():
    table = CarbonTable.load()
    places = [table.lookup(loc) for loc in ("US/OR", "TW/Taipei")]
    rows = emissions_table([("vgg", 3.6e6), ("resnet", 1.8e6)], places)
    assert [(r.run, r.location) for r in rows] == [("vgg", "US/OR"), ("vgg", "TW/Taipei"),
                                                    ("resnet", "US/OR"), ("resnet", "TW/Taipei")]
    assert [r.emissions_g for r in rows] == pytest.approx([288.2, 494.0, 144.1, 247.0])
    assert rows[2].energy_kwh == 0.5
    text = format_emissions(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["run", "location", "energy_kWh", "gCO2e/kWh", "gCO2e", "year", "source"]
    assert lines[2].split() == ["vgg", "TW/Taipei", "1", "494", "494", "2023", "moea-tw"]
