"""The callbacks a gateway process is answering, and the turns forwarding gets while they are many.

In one process the callbacks and the forwarding dispatcher share one core; a provider waits on its
callback's answer, while a delivery waits safely in the outbox (docs/benchmarks.md has the numbers).
The callback route counts (webhook.py), the dispatcher asks for turns (forward/dispatcher.py).
"""

from __future__ import annotations

import asyncio

BUSY = 16  # callbacks in flight in this process from which forwarding steps back…
BUSY_SHARE = 32  # …to one attempt per this many callbacks answered (slower, never stopped)


class CallbackLoad:
    """Counted by each CallbackRoute from a callback's whole body to its answer; one per process."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.answered = 0
        self._next_turn = 0
        self._waiting = False
        self._turn = asyncio.Event()
        self._queue = asyncio.Lock()  # attempts wait for their turn one after the other

    def started(self) -> None:
        self.in_flight += 1

    def ended(self) -> None:
        self.in_flight -= 1
        self.answered += 1
        if self._waiting and (self.in_flight < BUSY or self.answered >= self._next_turn):
            self._turn.set()

    async def turn(self) -> None:
        """Returns at once while callbacks are few; else after BUSY_SHARE more are answered. A
        waiting attempt always gets its turn: BUSY callbacks in flight will end."""
        async with self._queue:
            while self.in_flight >= BUSY and self.answered < self._next_turn:
                self._waiting = True
                self._turn.clear()
                await self._turn.wait()
            self._waiting = False
            self._next_turn = self.answered + BUSY_SHARE
