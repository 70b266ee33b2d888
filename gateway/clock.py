"""The one source of "now" for the callback path, injected from create_app down.

A Vonage token's age is judged against it, and every event's received_at comes from it, so a test
(or a replay) can run the app at any moment without freezing the process's own time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

Clock = Callable[[], datetime]  # an aware datetime, in UTC


def system_clock() -> datetime:
    return datetime.now(timezone.utc)
