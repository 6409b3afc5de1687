"""The pull board (jobs/board.py): progress published from job threads, read by `status` and
by feeds on an event loop; and the /api/pull lines made from a feed (server/pull_api._watch)."""

from __future__ import annotations

import asyncio
import threading

from llmlb.jobs.board import Board, Progress, Stage
from llmlb.server.pull_api import STOPPED, _watch
from llmlb.sources.hf_refs import Plan, PlanFile

NAME = "acme/tiny-GGUF"
PLAN = Plan(
    repo=NAME,
    revision="0" * 40,
    name=NAME,
    format="GGUF",
    files=[PlanFile("tiny-Q8_0.gguf", 100, sha256="ab" * 32)],
)


def at(stage: Stage, done: int = 0, error: str | None = None) -> Progress:
    state = {"files": {"tiny-Q8_0.gguf": {"parts": [[0, 100, done]], "done": False}}}
    return Progress.of(PLAN, state, stage, error)


def in_thread(fn) -> None:
    """Run `fn` in a thread of its own (as a job does) and raise what it raised."""
    failed: list[BaseException] = []

    def body() -> None:
        try:
            fn()
        except BaseException as exc:
            failed.append(exc)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if failed:
        raise failed[0]


async def lines(board: Board, publish=None) -> list[dict]:
    """What the stream sends; `publish(board)` runs in a thread once it has subscribed."""
    out = []
    async for line in _watch(board, NAME):
        out.append(line)
        if publish is not None and len(out) == 1:
            await asyncio.to_thread(publish, board)
    return out


def test_a_subscriber_gets_what_a_job_thread_publishes():
    board = Board()
    board.publish(at(Stage.QUEUED))

    async def follow() -> list[Progress | None]:
        seen = []
        with board.subscribe(NAME) as feed:
            async for p in feed:
                seen.append(p)
                if len(seen) == 1:
                    threading.Thread(
                        target=board.publish, args=(at(Stage.DOWNLOADING, 40),)
                    ).start()
                else:
                    return seen
        return seen

    first, second = asyncio.run(follow())
    assert first is not None and first.stage is Stage.QUEUED  # the state when it subscribed
    assert second is not None and second.stage is Stage.DOWNLOADING
    assert second.files[0].done == 40 and board.status(NAME) == second


class CountingLoop:
    """The subscriber's loop, counting the hand-offs made to it from publishing threads."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.handoffs = loop, 0

    def call_soon_threadsafe(self, *args):
        self.handoffs += 1
        return self.loop.call_soon_threadsafe(*args)


def test_a_slow_subscriber_gets_the_latest_state_not_a_backlog():
    board = Board()
    board.publish(at(Stage.DOWNLOADING, 0))

    async def follow() -> tuple[list[Progress | None], list[int]]:
        handoffs = []
        with board.subscribe(NAME) as feed:
            loop = feed._loop = CountingLoop(feed._loop)  # type: ignore[assignment]
            seen = [await anext(feed)]
            await asyncio.sleep(0)  # the loop settles: nothing is pending
            # the loop is busy (this thread blocks it) while a job publishes 100 states
            in_thread(lambda: [board.publish(at(Stage.DOWNLOADING, i)) for i in range(1, 101)])
            handoffs.append(loop.handoffs)
            seen.append(await anext(feed))
            await asyncio.sleep(0)
            in_thread(lambda: board.publish(at(Stage.DONE, 100)))
            handoffs.append(loop.handoffs - handoffs[0])
            seen.append(await anext(feed))
        return seen, handoffs

    seen, handoffs = asyncio.run(follow())
    assert [p.files[0].done for p in seen if p] == [0, 100, 100]
    assert seen[-1] is not None and seen[-1].stage is Stage.DONE  # no state in between queued
    assert handoffs == [1, 1]  # 100 publishes cost the loop what one does


def test_a_subscriber_that_leaves_is_forgotten():
    board = Board()
    board.publish(at(Stage.DOWNLOADING, 10))

    async def leave_after_one_line() -> None:
        stream = _watch(board, NAME)
        assert (await anext(stream))["completed"] == 10
        assert board.subscribers(NAME) == 1
        await stream.aclose()  # what the server does when the client goes away

    asyncio.run(leave_after_one_line())
    assert board.subscribers(NAME) == 0
    in_thread(lambda: board.publish(at(Stage.DOWNLOADING, 20)))  # nobody to tell: no error
    assert board.status(NAME) == at(Stage.DOWNLOADING, 20)


def test_a_feed_whose_loop_is_gone_does_not_hold_up_the_job():
    board = Board()

    async def subscribe_and_keep():
        cm = board.subscribe(NAME)
        cm.__enter__()  # never left: its loop closes under it
        return cm

    kept = asyncio.run(subscribe_and_keep())
    assert board.subscribers(NAME) == 1
    in_thread(lambda: board.publish(at(Stage.DOWNLOADING, 5)))
    assert board.status(NAME) is not None and board.status(NAME).files[0].done == 5
    kept.__exit__(None, None, None)
    assert board.subscribers(NAME) == 0


def test_a_failure_published_before_any_subscriber_is_what_it_is_told():
    board = Board()
    board.publish(at(Stage.FAILED, 30, error="disk full while writing tiny-Q8_0.gguf"))
    assert asyncio.run(lines(board))[-1] == {"error": "disk full while writing tiny-Q8_0.gguf"}
    assert board.status(NAME).stage is Stage.FAILED and board.under_way(NAME) is None


def test_the_stream_sends_files_then_each_step_once_then_success():
    board = Board()
    board.publish(at(Stage.QUEUED))

    def job(board: Board) -> None:
        for p in (at(Stage.DOWNLOADING, 50), at(Stage.DOWNLOADING, 50), at(Stage.DOWNLOADING, 100)):
            board.publish(p)
        for stage in (Stage.VERIFYING, Stage.WRITING, Stage.DONE):
            board.publish(at(stage, 100))

    sent = asyncio.run(lines(board, job))
    files = [e["completed"] for e in sent if "completed" in e]
    assert files[0] == 0 and files[-1] == 100 and files == sorted(set(files))  # only changes
    assert sent[0] == {
        "status": "pulling tiny-Q8_0.gguf",
        "digest": "sha256:" + "ab" * 32,
        "total": 100,
        "completed": 0,
        "file": "tiny-Q8_0.gguf",
    }
    statuses = [e["status"] for e in sent if "completed" not in e]
    assert statuses == ["verifying sha256 digest", "writing manifest", "success"]


def test_a_subscriber_that_only_sees_the_end_still_gets_every_step():
    board = Board()
    board.publish(at(Stage.DONE, 100))
    sent = asyncio.run(lines(board))
    assert [e["status"] for e in sent] == [
        "pulling tiny-Q8_0.gguf",
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]


def test_cancelled_stopped_and_unknown_pulls_end_the_stream_with_their_words():
    board = Board()
    assert asyncio.run(lines(board)) == [{"error": f"the download of '{NAME}' was cancelled"}]

    board.publish(at(Stage.DOWNLOADING, 10))
    sent = asyncio.run(lines(board, lambda b: b.mark(NAME, Stage.CANCELLED)))
    assert sent[-1] == {"error": f"the download of '{NAME}' was cancelled"}

    board.publish(at(Stage.DOWNLOADING, 10))
    sent = asyncio.run(lines(board, lambda b: b.publish(at(Stage.STOPPED, 20))))
    assert [e.get("completed") for e in sent[:-1]] == [10, 20]  # its last bytes, then why
    assert sent[-1] == {"error": STOPPED.format(name=NAME)}


def test_under_way_is_queued_or_running_only():
    board = Board()
    assert board.under_way(NAME) is None
    board.mark(NAME, Stage.FAILED)  # nothing known: nothing to mark
    assert board.status(NAME) is None
    for stage in Stage:
        board.publish(at(stage))
        expected = stage in (Stage.QUEUED, Stage.DOWNLOADING, Stage.VERIFYING, Stage.WRITING)
        assert (board.under_way(NAME) is not None) == expected, stage
