"""When a signal waits for the end of an epoch, and when it acts at once (#16 point 6).

Real signals sent to this process, with fer_lottery's handlers installed as the CLI installs
them. The waiting itself, the checkpoint and the exact resume are tested on real CLI jobs in
test_faults.py; here are the cases that must not wait: no stage training, an epoch too long to
wait for, a second signal.
"""

from __future__ import annotations

import os
import signal

import pytest

from fer_lottery.job import termination


@pytest.fixture
def handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)}
    for s in saved:
        signal.signal(s, signal.SIG_DFL if s != signal.SIGINT else signal.default_int_handler)
    termination.install()
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def _send(signum: int) -> None:
    os.kill(os.getpid(), signum)


def test_sigterm_outside_a_stage_stops_at_once(handlers):
    with pytest.raises(termination.JobTerminated):
        _send(signal.SIGTERM)


def test_sigterm_waits_for_a_short_epoch_and_a_second_one_does_not(handlers):
    boundary = termination.EpochBoundary()
    boundary.epoch_s = 0.5
    with termination.epoch_boundary(boundary):
        _send(signal.SIGTERM)  # waits: nothing raised here
        assert boundary.stop == (signal.SIGTERM, None)
        with pytest.raises(termination.JobTerminated):
            _send(signal.SIGTERM)
    with pytest.raises(termination.JobTerminated, match="SIGTERM"):
        boundary.act()  # what the stage does at the epoch's end


@pytest.mark.parametrize("epoch_s", [None, termination.GRACE_S + 1])
def test_sigterm_in_a_first_or_long_epoch_stops_at_once(handlers, epoch_s):
    """No epoch measured yet, or epochs longer than a scheduler waits before SIGKILL."""
    boundary = termination.EpochBoundary()
    boundary.epoch_s = epoch_s
    with termination.epoch_boundary(boundary), pytest.raises(termination.JobTerminated):
        _send(signal.SIGTERM)
    assert boundary.stop is None


def test_sigusr2_asks_a_checkpoint_and_never_stops(handlers, caplog):
    _send(signal.SIGUSR2)  # no stage: said, and nothing else happens (its default would kill)
    assert "no training stage is running" in caplog.text
    boundary = termination.EpochBoundary()
    with termination.epoch_boundary(boundary):
        _send(signal.SIGUSR2)
    assert boundary.checkpoint_requested and boundary.stop is None


def test_a_launchers_usr2_handler_runs_after_the_epoch(handlers):
    """submitit's checkpoint-and-requeue handler, installed before fer_lottery's: it runs at
    the epoch's end, or at once when the epoch is too long to wait for."""
    calls = []
    signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    termination.install()
    boundary = termination.EpochBoundary()
    boundary.epoch_s = 0.5
    with termination.epoch_boundary(boundary):
        _send(signal.SIGUSR2)
        assert calls == []
        boundary.act()
    assert calls == [signal.SIGUSR2]
    boundary.epoch_s = termination.GRACE_S + 1
    with termination.epoch_boundary(boundary):
        _send(signal.SIGUSR2)
    assert calls == [signal.SIGUSR2, signal.SIGUSR2]
