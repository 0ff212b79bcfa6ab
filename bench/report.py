"""The reports every benchmark writes: one Markdown page (table, notes, machine) and a PNG.

Markdown goes to stdout and to `bench/results/<name>.md`; the plot, when matplotlib is
installed (`pip install -e '.[bench]'`), beside it as `<name>.png`. Without matplotlib the
page says so instead of failing: the table is the result, the plot only helps to read it.
"""

from __future__ import annotations

import datetime
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import REPO

RESULTS = REPO / "bench" / "results"


def now_utc() -> str:
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"


@dataclass
class Report:
    """A Markdown page: title, intro paragraphs, one table, notes and the machine's facts."""

    title: str
    intro: list[str]
    header: list[str]
    align: str                      # one letter per column: l (text) or r (numbers)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)

    def render(self) -> str:
        rule = ["---" if side == "l" else "---:" for side in self.align]
        lines = [f"# {self.title}", "", *self.intro, "",
                 _row(self.header), _row(rule), *(_row(row) for row in self.rows)]
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {note}" for note in self.notes]
        if self.info:
            lines += ["", "Machine:", ""] + [f"- {key}: {value}" for key, value in self.info.items()]
        return "\n".join(lines) + "\n"

    def publish(self, path: Path, plot: Callable[[Any], Any] | None = None) -> None:
        """Draw the plot (noting a missing matplotlib), print the page and write it to `path`.

        `plot(pyplot)` returns the matplotlib figure to save."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if plot is not None:
            image = path.with_suffix(".png")
            try:
                import matplotlib
                matplotlib.use("Agg")                # no display on a benchmark machine
                from matplotlib import pyplot
            except ImportError:
                self.notes.append("no plot: matplotlib is not installed (`pip install -e '.[bench]'`)")
            else:
                figure = plot(pyplot)
                figure.tight_layout()
                figure.savefig(image, dpi=100)
                pyplot.close(figure)
                self.intro.append(f"\n![{self.title}]({image.name})")
        text = self.render()
        print(text)
        path.write_text(text)


@dataclass(frozen=True)
class Spread:
    """Repeated measurements of one figure: their median and their range. On a shared machine
    one run can be off by a third; the range says how far to trust the median."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no measurements")
        return cls(statistics.median(values), min(values), max(values))

    def range(self, digits: int = 1) -> str:
        return f"{self.low:.{digits}f}–{self.high:.{digits}f}"


def times(value: float, reference: float | None) -> str:
    """`value` as a multiple of `reference` ("2.47×"), or "–" when there is no reference to compare with."""
    return f"{value / reference:.2f}×" if reference else "–"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"

