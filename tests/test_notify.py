"""checkout_cam.notify against real AF_UNIX datagram sockets, in-process and from a child process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from checkout_cam.notify import SystemdNotifier
from tests.conftest import REPO
from tests.helpers.notify_socket import NotifySocket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ready_sends_ready_and_status_in_one_datagram(tmp_path):
    with NotifySocket(tmp_path) as ns, SystemdNotifier(ns.path) as n:
        assert n.enabled
        n.ready("serving camera 0")
        assert ns.receive(timeout=2) == ["READY=1\nSTATUS=serving camera 0"]


def test_socket_path_defaults_to_notify_socket_variable(tmp_path):
    with NotifySocket(tmp_path) as ns, SystemdNotifier(environ=ns.env()) as n:
        n.ready()
        assert ns.receive(timeout=2) == ["READY=1"]


def test_abstract_namespace_socket(tmp_path):
    with NotifySocket(tmp_path, abstract=True) as ns, SystemdNotifier(ns.path) as n:
        assert ns.path.startswith("@")
        n.status("warming up")
        n.stopping()
        assert ns.receive(timeout=2) == ["STATUS=warming up", "STOPPING=1"]


def test_stopping_with_status(tmp_path):
    with NotifySocket(tmp_path) as ns, SystemdNotifier(ns.path) as n:
        n.stopping("SIGTERM: draining the frame queue")
        assert ns.receive(timeout=2) == ["STOPPING=1\nSTATUS=SIGTERM: draining the frame queue"]


def test_status_text_cannot_forge_another_assignment(tmp_path):
    with NotifySocket(tmp_path) as ns, SystemdNotifier(ns.path) as n:
        n.status("camera offline\nREADY=1")
        assert ns.receive(timeout=2) == ["STATUS=camera offline READY=1"]
        with pytest.raises(ValueError, match="KEY=VALUE"):
            n.notify("READY=1\nWATCHDOG=1")
        with pytest.raises(ValueError, match="KEY=VALUE"):
            n.notify("READY")


def test_watchdog_is_rate_limited_to_half_the_interval(tmp_path):
    clock = FakeClock()
    with NotifySocket(tmp_path) as ns:
        with SystemdNotifier(environ=ns.env(watchdog_sec=10), clock=clock) as n:
            assert n.watchdog_interval == 10.0
            for _ in range(100):
                n.watchdog()
            assert ns.receive(timeout=1) == ["WATCHDOG=1"]
            clock.now += 4.9
            n.watchdog()
            assert ns.receive(timeout=0.2) == []
            clock.now += 0.1  # 5 s = interval / 2 since the last ping
            for _ in range(100):
                n.watchdog()
            assert ns.receive(timeout=1) == ["WATCHDOG=1"]


def test_watchdog_needs_watchdog_usec(tmp_path):
    with NotifySocket(tmp_path) as ns, SystemdNotifier(environ=ns.env()) as n:
        assert n.watchdog_interval is None
        n.watchdog()
        assert ns.receive(timeout=0.2) == []


@pytest.mark.parametrize("pid_offset, expected", [(0, 2.5), (1, None)])
def test_watchdog_pid_must_be_this_process(tmp_path, pid_offset, expected):
    with NotifySocket(tmp_path) as ns:
        env = {**ns.env(watchdog_sec=2.5), "WATCHDOG_PID": str(os.getpid() + pid_offset)}
        with SystemdNotifier(environ=env) as n:
            assert n.watchdog_interval == expected


def test_bad_watchdog_usec_is_ignored_with_a_warning(tmp_path, caplog):
    with NotifySocket(tmp_path) as ns:
        with SystemdNotifier(environ={**ns.env(), "WATCHDOG_USEC": "30s"}) as n:
            assert n.watchdog_interval is None
    assert "WATCHDOG_USEC='30s'" in caplog.text


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}], ids=["unset", "empty"])
def test_without_notify_socket_every_call_is_a_no_op(environ):
    n = SystemdNotifier(environ={**environ, "WATCHDOG_USEC": "10000000"})
    assert not n.enabled
    assert n.watchdog_interval is None
    assert n.notify("READY=1") is False
    n.ready("x")
    n.watchdog()
    n.status("x")
    n.stopping()
    n.close()


def test_relative_socket_path_disables_with_a_warning(caplog):
    n = SystemdNotifier("relative/notify.sock")
    assert not n.enabled
    assert "not an absolute path" in caplog.text


def test_vanished_socket_does_not_raise_and_warns_once(tmp_path, caplog):
    with NotifySocket(tmp_path) as ns:
        path = ns.path
    assert not os.path.exists(path)
    with SystemdNotifier(path) as n, caplog.at_level(logging.DEBUG, logger="checkout_cam.notify"):
        assert n.notify("READY=1") is False
        n.ready()
        n.stopping()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and path in warnings[0].getMessage()


def test_full_receive_queue_drops_messages_instead_of_blocking(tmp_path):
    # Nobody reads: the kernel queue fills after a few datagrams, then sends fail fast.
    with NotifySocket(tmp_path) as ns, SystemdNotifier(ns.path) as n:
        results = [n.notify(f"STATUS=message {i}") for i in range(2000)]
        assert results[0] is True
        assert results[-1] is False
        assert ns.receive(timeout=1)[0] == "STATUS=message 0"


def test_closed_notifier_sends_nothing(tmp_path):
    with NotifySocket(tmp_path) as ns:
        n = SystemdNotifier(ns.path)
        n.close()
        assert not n.enabled
        assert n.notify("READY=1") is False
        assert ns.receive(timeout=0.2) == []


def test_notify_socket_helper_handles_paths_too_long_for_sockaddr_un(tmp_path):
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    with NotifySocket(deep) as ns, SystemdNotifier(ns.path) as n:
        assert len(ns.path) <= 108
        n.ready()
        assert ns.wait_for("READY=1", timeout=2)
    assert not os.path.exists(ns.path)


CHILD = textwrap.dedent("""
    from checkout_cam.notify import SystemdNotifier
    with SystemdNotifier() as n:
        n.ready("child up")
        for _ in range(50):
            n.watchdog()
        n.stopping("child done")
""")


def test_child_process_speaks_the_protocol_end_to_end(tmp_path):
    with NotifySocket(tmp_path) as ns:
        env = {**os.environ, **ns.env(watchdog_sec=30)}
        proc = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert ns.wait_for("READY=1", timeout=5)
        assert ns.wait_for("STOPPING=1", timeout=5)
        assert ns.messages == ["READY=1\nSTATUS=child up", "WATCHDOG=1", "STOPPING=1\nSTATUS=child done"]
        assert ns.count("WATCHDOG=1") == 1
        assert ns.count("STATUS") == 2
