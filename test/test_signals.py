"""Signals become a stop flag; a second Ctrl-C aborts at once."""

from __future__ import annotations

import os
import signal

import pytest

from src.launch.signals import StopRequest


def test_signals_set_the_flag_and_exit_code() -> None:
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGUSR1, 138)):
        with StopRequest() as stop:
            assert not stop.requested
            os.kill(os.getpid(), signum)
            assert stop.requested and stop.exit_code == code


def test_second_ctrl_c_aborts_immediately() -> None:
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.exit_code == 130
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_previous_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
