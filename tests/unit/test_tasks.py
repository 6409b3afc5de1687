"""Background loops are supervised: a failure is logged with its traceback and the loop restarts."""

import asyncio
import logging

import pytest

from llmlb import tasks


def test_a_failing_loop_is_logged_and_restarted_with_backoff(caplog):
    runs = []

    async def loop() -> None:
        runs.append(asyncio.get_running_loop().time())
        if len(runs) < 3:
            raise RuntimeError(f"boom {len(runs)}")

    async def scenario() -> None:
        await asyncio.wait_for(tasks.supervise("test loop", loop, first_delay=0.01, max_delay=1), 5)

    with caplog.at_level(logging.ERROR, logger="llmlb.tasks"):
        asyncio.run(scenario())
    assert len(runs) == 3  # failed twice, then ran to its end
    failures = [r for r in caplog.records if "background task test loop failed" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info for r in failures)  # with the traceback
    assert "boom 1" in caplog.text and "boom 2" in caplog.text


def test_cancelling_a_supervised_loop_stops_it():
    async def scenario() -> None:
        running = asyncio.Event()

        async def loop() -> None:
            running.set()
            await asyncio.sleep(3600)

        task = tasks.start("sleeper", loop)
        await running.wait()
        await tasks.stop(task)
        assert task.cancelled()

    asyncio.run(scenario())


def test_stop_accepts_missing_and_finished_tasks():
    async def scenario() -> None:
        done = asyncio.create_task(asyncio.sleep(0))
        await done
        await tasks.stop(None, done)

    asyncio.run(scenario())


@pytest.mark.parametrize("failures", [1, 6])
def test_restart_delay_doubles_up_to_the_cap(failures, monkeypatch):
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded_sleep(secs: float) -> None:
        delays.append(secs)
        await real_sleep(0)

    monkeypatch.setattr(tasks.asyncio, "sleep", recorded_sleep)
    count = 0

    async def loop() -> None:
        nonlocal count
        count += 1
        if count <= failures:
            raise ValueError("again")

    asyncio.run(tasks.supervise("capped", loop, first_delay=1, max_delay=4))
    assert delays == [min(4, 2**i) for i in range(failures)]
