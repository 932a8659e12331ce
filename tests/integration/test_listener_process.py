"""relay/listener_process.py, serve's side, against real child processes over real pipes.

The children here are small scripts that speak the protocol the way a failing
listener process would (refuse to start, die, send garbage); the real child is
exercised by tests/integration/test_serve.py.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
from pathlib import Path

import pytest

from relay.listener import ListenerError
from relay.listener_process import ListenerProcess, ListenerSetup
from relay.spool import QueueEntry, RecipientState, RecipientStatus
from relay.submission import ListenSettings

pytestmark = pytest.mark.integration

SETUP = ListenerSetup(
    listen=ListenSettings(),
    spool_path=Path("/nonexistent"),
    log_format="text",
    log_level="info",
    io_threads=1,
)


def entry(queue_id: str) -> QueueEntry:
    recipient = RecipientState("bob@example.net", RecipientStatus.QUEUED)
    return QueueEntry(queue_id, 1.0, 10, "alice@example.org", (recipient,))


def child(tmp_path: Path, body: str) -> list[str]:
    """A child process running `body` with `send(message)` and `setup()` defined."""
    script = tmp_path / "child.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, pickle, sys, time
            from relay.listener_process import _frame, _read_setup

            def send(message):
                os.write(1, _frame(message))

            def setup():
                return _read_setup(0)

            """
        )
        + textwrap.dedent(body)
    )
    return [sys.executable, str(script)]


async def test_a_start_up_refusal_is_one_line(tmp_path: Path) -> None:
    command = child(
        tmp_path,
        """
        setup()
        send(("error", "listen.address: cannot listen on 127.0.0.1:25: Address in use"))
        sys.exit(2)
        """,
    )
    process = ListenerProcess(SETUP, lambda e: None, command=command)
    with pytest.raises(ListenerError, match=r"^listen.address: cannot listen on .*in use$"):
        await process.start()


async def test_a_child_that_dies_before_ready_is_a_start_up_failure(tmp_path: Path) -> None:
    command = child(tmp_path, "sys.exit(3)\n")
    process = ListenerProcess(SETUP, lambda e: None, command=command)
    with pytest.raises(ListenerError, match=r"exited at start-up \(status 3\)"):
        await process.start()


async def test_notices_reach_the_engine_and_stop_is_obeyed(tmp_path: Path) -> None:
    command = child(
        tmp_path,
        """
        from relay.listener_process import ListenerSetup
        from relay.spool import QueueEntry, RecipientState, RecipientStatus
        assert isinstance(setup(), ListenerSetup)
        send(("ready", [("127.0.0.1", 2525)]))
        for queue_id in ("1M8500JMYHRHR1K", "1M8500JMYHRHR2K"):
            recipient = RecipientState("bob@example.net", RecipientStatus.QUEUED)
            send(("queued", QueueEntry(queue_id, 1.0, 10, "alice@example.org", (recipient,))))
        size = int.from_bytes(os.read(0, 4), "big")
        command = pickle.loads(os.read(0, size))
        assert command == ("stop", 2.5), command
        sys.exit(0)
        """,
    )
    offered: list[QueueEntry] = []
    process = ListenerProcess(SETUP, offered.append, command=command)
    await process.start()
    assert process.addresses == [("127.0.0.1", 2525)]
    await process.stop(2.5)
    assert [e.id for e in offered] == ["1M8500JMYHRHR1K", "1M8500JMYHRHR2K"]
    assert offered[0] == entry("1M8500JMYHRHR1K")


async def test_garbage_from_the_child_restarts_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A frame too large to be a notice: the child is killed and started again; an engine
    that raises on a notice does not stop the others from being passed on."""
    starts = tmp_path / "starts"
    command = child(
        tmp_path,
        f"""
        setup()
        with open({str(starts)!r}, "a") as f:
            f.write("x")
        send(("ready", []))
        send(("queued", "not an entry"))
        os.write(1, (2**31).to_bytes(4, "big"))
        time.sleep(60)
        """,
    )
    seen: list[object] = []

    def engine(entry: object) -> None:
        seen.append(entry)
        raise RuntimeError("a bug in the engine")

    process = ListenerProcess(SETUP, engine, command=command)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="relay.listener")
    await process.start()
    for _ in range(400):
        if starts.exists() and len(starts.read_text()) >= 2:
            break
        await asyncio.sleep(0.05)
    await process.stop(0)
    assert len(starts.read_text()) >= 2
    assert seen[:2] == ["not an entry", "not an entry"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("unreadable notice from the listener process" in m for m in messages), messages
    assert any("the engine did not take the notice" in m for m in messages), messages
    assert any("listener process started again" in m for m in messages), messages
