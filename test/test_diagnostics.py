"""NodeStats: counters added to from several threads, under its lock."""
import threading

import pytest

from da3_ros.ros.diagnostics import COUNTERS, NodeStats


def test_counts_from_many_threads_are_exact():
    stats = NodeStats(["a"])
    n_threads, n_each = 8, 20000

    def hammer():
        for _ in range(n_each):
            stats.count("bad_input")
            stats.count("errors", 2)

    threads = [threading.Thread(target=hammer) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = stats.summary()
    assert summary["bad_input"] == n_threads * n_each and summary["errors"] == 2 * n_threads * n_each


def test_every_counter_is_reported_and_unknown_names_are_refused():
    stats = NodeStats(["a"])
    for name in COUNTERS:
        stats.count(name)
    assert all(stats.summary()[name] == 1 for name in COUNTERS)
    with pytest.raises(ValueError, match="no counter 'bad_inputs'"):
        stats.count("bad_inputs")


def _status(stats: NodeStats):
    from da3_ros.core.sync import SyncStats
    return stats.diagnostics("da3_depth", SyncStats([0])).status[0]


@pytest.mark.parametrize("counter", ["errors", "bad_input"])
def test_one_bad_frame_warns_once_not_for_good(counter):
    """Issue 23.12: errors and bad input WARN in the message after they grew; the counter stays in the values."""
    from diagnostic_msgs.msg import DiagnosticStatus
    stats = NodeStats(["a"])
    stats.set_done()
    assert _status(stats).level == DiagnosticStatus.OK
    stats.count(counter, 2)
    warned = _status(stats)
    assert warned.level == DiagnosticStatus.WARN and "+2 since the last message" in warned.message
    for _ in range(2):  # nothing new: OK again, the count kept
        stats.set_done()
        again = _status(stats)
        assert again.level == DiagnosticStatus.OK and again.message == "ok"
        assert {kv.key: kv.value for kv in again.values}[counter] == "2"
    stats.count(counter)
    assert "+1 since the last message" in _status(stats).message


def test_an_incompatible_qos_warns_until_a_set_goes_through():
    """One QoS event per mismatched match, not per lost frame: WARN until a set is processed after it."""
    from diagnostic_msgs.msg import DiagnosticStatus
    stats = NodeStats(["a"])
    stats.count("incompatible_qos")
    assert "incompatible QoS +1" in _status(stats).message
    nothing_since = _status(stats)
    assert nothing_since.level == DiagnosticStatus.WARN and "no set since" in nothing_since.message
    stats.set_done()
    assert _status(stats).level == DiagnosticStatus.OK
