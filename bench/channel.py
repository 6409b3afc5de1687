"""What the runner channel costs per decode step and per token, without a model.

The runner's side (a thread: wire.frame of an Events frame and sendall, as
runner_main.Channel.send does) sends STEPS frames over a real Unix socket pair; the node's
side (asyncio: readexactly of the header and the body, wire.reply_decoder, as Runner's read
loop does) decodes them and touches every piece, as _dispatch does. Each frame carries one
Piece per stream (a typical 4-character token) for 1, 8 and 16 streams, back to back (the node
reads several frames per wakeup) and one per millisecond (each frame wakes the node's event
loop alone, as a decode step's frame does). Printed: CPU time per frame and per token on each
side (the thread's CPU time / frames), median of --rounds rounds, and both sides' cost per step
as a share of a decode step of SmolLM2-135M at 8 streams (about 50 ms).

Run: .venv/bin/python bench/channel.py [--rounds 5] [--steps 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmlb.engine import wire  # noqa: E402

STEP_MS = 50.0  # a decode step of SmolLM2-135M with 8 streams on 2 cores, for scale


def sender(sock: socket.socket, streams: int, steps: int, pace: float, cpu: list[float]) -> None:
    began, busy = time.thread_time(), 0.0
    for _ in range(steps):
        items: list[wire.Event] = [wire.Piece(id=i, text=" the") for i in range(streams)]
        sock.sendall(wire.frame(wire.Events(items)))
        if pace:  # a frame per step, as a decode loop sends them: each wakes the node alone
            slept = time.thread_time()
            time.sleep(pace)
            busy += time.thread_time() - slept
    cpu.append(time.thread_time() - began - busy)
    sock.shutdown(socket.SHUT_WR)


async def receiver(sock: socket.socket, steps: int) -> tuple[float, int]:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    began, seen = time.thread_time(), 0
    for _ in range(steps):
        header = await reader.readexactly(wire.HEADER.size)
        data = await reader.readexactly(wire.frame_size(header))
        for event in wire.reply_decoder.decode(data).items:
            if isinstance(event, wire.Piece):
                seen += len(event.text)
    took = time.thread_time() - began
    writer.close()
    return took, seen


def one(streams: int, steps: int, pace: float) -> tuple[float, float]:
    node, runner = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    sent: list[float] = []
    t = threading.Thread(target=sender, args=(runner, streams, steps, pace, sent))
    t.start()
    took, seen = asyncio.run(receiver(node, steps))
    t.join()
    runner.close()
    assert seen == 4 * streams * steps
    return sent[0] / steps, took / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20000)
    args = ap.parse_args()
    print(
        "| frames | streams | runner us/frame | node us/frame | node us/token | share of a step |"
    )
    print("|---|---|---|---|---|---|")
    for mode, pace, steps in (("back to back", 0.0, args.steps), ("1 per ms", 0.001, 2000)):
        for streams in (1, 8, 16):
            runs = [one(streams, steps, pace) for _ in range(args.rounds)]
            send = statistics.median(r[0] for r in runs) * 1e6
            recv = statistics.median(r[1] for r in runs) * 1e6
            share = (send + recv) / (STEP_MS * 1000)
            print(
                f"| {mode} | {streams} | {send:.1f} | {recv:.1f} | {recv / streams:.2f} "
                f"| {share:.2%} |"
            )
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
