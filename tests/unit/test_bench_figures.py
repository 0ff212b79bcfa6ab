"""The benchmarks' arithmetic: median and range of repeated runs, the × HAProxy ratio, and
what a load generator is asked to send. Nothing here runs a load or measures time."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench.harness import Cpus
from bench.loadgen import LoadResult, Runs, Schedule, Variety
from bench.report import Spread, times
from bench.targets import PROXIES
from bench.throughput import Bench, Row


def result(rps: float, p99_ms: float = 1.0, errors: int = 0) -> LoadResult:
    return LoadResult("wrk", int(rps * 5), 5.0, rps, 0.5, p99_ms, errors)


def test_a_spread_is_the_median_and_the_extremes():
    assert Spread.of([80.0, 71.0, 78.0]) == Spread(78.0, 71.0, 80.0)
    assert Spread.of([2.0, 4.0]) == Spread(3.0, 2.0, 4.0)
    assert Spread.of([70.04, 78.96]).range() == "70.0–79.0"


def test_a_spread_of_nothing_is_refused():
    with pytest.raises(ValueError):
        Spread.of([])


def test_times_divides_by_the_reference_or_says_there_is_none():
    assert times(75.0, 30.0) == "2.50×"
    assert times(30.0, 30.0) == "1.00×"
    assert times(75.0, None) == "–"


def test_repeated_runs_give_the_median_cpu_and_load_and_the_sum_of_errors():
    runs = [result(10_000, 8.0), result(14_000, 6.0, errors=2), result(12_000, 9.0, errors=1)]
    measured = Runs(runs, [[80.0, 70.0, 75.0]], warmups=(result(1_000),))
    assert measured.cpu() == Spread(75.0, 70.0, 80.0)
    assert measured.rps.median == 12_000
    assert measured.p99_ms == 8.0
    assert measured.errors == 3
    assert measured.replies == 5 * (10_000 + 14_000 + 12_000 + 1_000)   # 5 s runs; the warm-up's count too
    # 80 µs × 10k/s = 0.8 of a core, 70 × 14k = 0.98, 75 × 12k = 0.9
    assert measured.busy() == pytest.approx(Spread(0.9, 0.8, 0.98))


def test_a_later_round_joins_its_runs_and_warm_up_to_the_earlier_ones():
    first = Runs([result(10_000), result(14_000)], [[80.0, 70.0]], warmups=(result(1_000),))
    later = Runs([result(12_000)], [[90.0]], warmups=(result(2_000),))
    joined = first.joined(later)
    assert joined.cpu() == Spread(80.0, 70.0, 90.0)
    assert joined.rps.median == 12_000
    assert joined.replies == 5 * (10_000 + 14_000 + 12_000 + 1_000 + 2_000)


def test_rounds_merge_a_targets_rows_and_keep_the_order_of_first_appearance():
    bench = Bench(Schedule(1.0, 1, 0.0, "wrk", None), [50], Cpus("1", "0", "0"), None, Path("."),
                  rounds=2)
    for cpu in (20.0, 30.0):
        bench.add(Row("lbproxy", "50", Runs([result(10_000)], [[cpu]])))
        bench.add(Row("haproxy", "50", Runs([result(10_000)], [[cpu / 2]])))
    assert [row.target for row in bench.rows] == ["lbproxy", "haproxy"]
    assert bench.rows[0].measured.cpu_us == [[20.0, 30.0]]
    assert bench.reference_cpu("50") == 12.5


def test_an_upload_is_passed_to_the_builtin_client():
    assert Variety(upload=102400).argv == ["--upload", "102400"]
    assert Variety(close=True).argv == ["--close"]


def test_lbproxy_default_is_the_benchmark_config_without_the_log_setting(tmp_path):
    PROXIES["lbproxy"].command(tmp_path, 8080, [9001], None)
    argv = PROXIES["lbproxy-default"].command(tmp_path, 8080, [9001], None)
    quiet = yaml.safe_load((tmp_path / "lbproxy.yaml").read_text())
    default = yaml.safe_load((tmp_path / "lbproxy-default.yaml").read_text())
    assert argv[-1] == str(tmp_path / "lbproxy-default.yaml")
    assert quiet["global"].pop("log") == {"access": "stdout", "format": "off"}
    assert default == quiet
