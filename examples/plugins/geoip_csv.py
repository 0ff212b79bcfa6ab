"""Example plugin: the client's country from a CSV table of address ranges.

The table is what GeoIP vendors export as CSV: `first,last,country` per line (IPv4 or
IPv6 addresses, ranges that do not overlap, `#` comments). It is read on first use from
the file named by the GEOIP_CSV environment variable (default: `geoip.csv` beside this
file); a lookup is a binary search over the range starts, O(log n) per request.

    global:
      plugins: [geoip_csv.py]          # beside the YAML file, or a module on sys.path
    frontends:
      web:
        http_request:
          - deny: {status: 451}
            if: "{ geo_country KP IR }"
          - set_header: {name: X-Country, value: "%[geo_country]"}
"""

from __future__ import annotations

import bisect
import csv
import ipaddress
import os
from dataclasses import dataclass, field

from lbproxy import ext


@dataclass
class RangeTable:
    """Ranges of one address family, sorted by their first address."""

    firsts: list[int] = field(default_factory=list)
    lasts: list[int] = field(default_factory=list)
    countries: list[str] = field(default_factory=list)

    def country(self, address: int) -> str | None:
        i = bisect.bisect_right(self.firsts, address) - 1
        return self.countries[i] if i >= 0 and address <= self.lasts[i] else None


def read_table(path: str) -> dict[int, RangeTable]:
    """`{4: RangeTable, 6: RangeTable}`; ValueError naming the line of a bad row."""
    rows: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
    with open(path, newline="") as source:
        for number, row in enumerate(csv.reader(source), 1):
            if not row or row[0].lstrip().startswith("#"):
                continue
            try:
                first, last = (ipaddress.ip_address(cell.strip()) for cell in row[:2])
                country = row[2].strip().upper()
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}:{number}: expected first,last,country: {exc}") from None
            if first.version != last.version or int(first) > int(last):
                raise ValueError(f"{path}:{number}: not a range: {first} .. {last}")
            rows[first.version].append((int(first), int(last), country))
    tables = {}
    for version, ranges in rows.items():
        ranges.sort()
        tables[version] = RangeTable([r[0] for r in ranges], [r[1] for r in ranges],
                                     [r[2] for r in ranges])
    return tables


_tables: dict[int, RangeTable] | None = None


def tables() -> dict[int, RangeTable]:
    global _tables
    if _tables is None:
        default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "geoip.csv")
        _tables = read_table(os.environ.get("GEOIP_CSV", default))
    return _tables


@ext.fetch("geo_country")
def geo_country(req: ext.Request) -> str | None:
    """The two-letter country of the client address, or None when no range holds it."""
    address = ipaddress.ip_address(req.client_ip)
    return tables()[address.version].country(int(address))
