"""Waiting for a step's sends: all of them, the first failure raised, and a stop never cancelling them."""

from __future__ import annotations

import asyncio

import pytest

from stream.runtime.faust_output import delivered


def test_every_send_is_waited_for_whatever_order_they_complete_in() -> None:
    async def scenario() -> list[bool]:
        loop = asyncio.get_running_loop()
        sends = [loop.create_future() for _ in range(4)]
        for index in (3, 1, 0, 2):  # completed out of order, one per loop turn
            loop.call_later(0.001 * (index + 1), sends[index].set_result, index)
        await delivered(list(sends))
        return [send.done() for send in sends]

    assert asyncio.run(scenario()) == [True] * 4


def test_a_failed_send_raises_once_all_are_done() -> None:
    async def scenario() -> list[asyncio.Future[int]]:
        loop = asyncio.get_running_loop()
        sends = [loop.create_future() for _ in range(3)]
        loop.call_later(0.001, sends[1].set_exception, RuntimeError("not delivered"))
        loop.call_later(0.002, sends[0].set_result, 0)
        loop.call_later(0.003, sends[2].set_result, 2)
        with pytest.raises(RuntimeError, match="not delivered"):
            await delivered(list(sends))
        return sends

    sends = asyncio.run(scenario())
    assert all(send.done() for send in sends)


def test_a_stop_cancels_the_wait_but_not_the_sends() -> None:
    async def scenario() -> asyncio.Future[int]:
        send = asyncio.get_running_loop().create_future()
        waiting = asyncio.create_task(delivered([send]))
        await asyncio.sleep(0.001)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return send

    send = asyncio.run(scenario())
    assert not send.cancelled() and not send.done()
