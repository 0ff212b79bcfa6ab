"""DNS discovery without DNS: SRV weight mapping and slot planning."""

from __future__ import annotations

from lbproxy.backends.discovery import Target, plan, srv_weight


def test_srv_weight_is_clamped_to_server_weights() -> None:
    assert [srv_weight(w) for w in (0, 1, 10, 256, 257, 65535)] == [1, 1, 10, 256, 256, 256]


def test_new_targets_take_the_lowest_free_slots_in_order() -> None:
    result = plan({}, set(), [Target("10.0.0.2", 80), Target("10.0.0.1", 80)], "web", 3)
    assert result.add == [("web1", Target("10.0.0.1", 80)), ("web2", Target("10.0.0.2", 80))]
    assert result.remove == [] and result.reweight == []


def test_targets_keep_their_slot_vanished_ones_are_removed() -> None:
    current = {"web1": Target("10.0.0.1", 80), "web2": Target("10.0.0.2", 80)}
    result = plan(current, {"web1", "web2"}, [Target("10.0.0.2", 80), Target("10.0.0.3", 80)],
                  "web", 3)
    assert result.remove == ["web1"]
    assert result.add == [("web3", Target("10.0.0.3", 80))]   # web1 is still draining


def test_a_freed_slot_is_reused() -> None:
    result = plan({"web2": Target("10.0.0.2", 80)}, {"web2"},
                  [Target("10.0.0.2", 80), Target("10.0.0.9", 80)], "web", 2)
    assert result.add == [("web1", Target("10.0.0.9", 80))]


def test_weight_changes_reweight_in_place_and_ports_distinguish_targets() -> None:
    current = {"web1": Target("10.0.0.1", 80, 10)}
    result = plan(current, {"web1"}, [Target("10.0.0.1", 80, 30), Target("10.0.0.1", 81, 5)],
                  "web", 2)
    assert result.reweight == [("web1", 30)]
    assert result.add == [("web2", Target("10.0.0.1", 81, 5))]


def test_more_targets_than_slots_fill_the_slots_only() -> None:
    answer = [Target(f"10.0.0.{i}", 80) for i in range(1, 6)]
    result = plan({"web1": Target("10.0.0.5", 80)}, {"web1"}, answer, "web", 2)
    assert result.add == [("web2", Target("10.0.0.1", 80))]
    assert result.remove == []


def test_duplicate_targets_count_once_with_the_larger_weight() -> None:
    result = plan({}, set(), [Target("10.0.0.1", 80, 5), Target("10.0.0.1", 80, 20)], "w", 4)
    assert result.add == [("w1", Target("10.0.0.1", 80, 20))]


def test_an_empty_answer_removes_every_slot() -> None:
    current = {"web1": Target("10.0.0.1", 80), "web2": Target("10.0.0.2", 80)}
    assert plan(current, set(current), [], "web", 2).remove == ["web1", "web2"]
