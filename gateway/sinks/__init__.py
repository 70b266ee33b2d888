"""The sinks: where verified events go. Each type's config keys and constructor: settings.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.sinks.base import Part, Sink, Store

if TYPE_CHECKING:
    from collections.abc import Sequence

    # not at run time: the SQLite writer process imports this package and needs no pydantic
    from gateway.sinks.batch import Observe
    from gateway.sinks.settings import SinkSettings


def open_sink(config: SinkSettings, *, reading: bool = False, observe: Observe | None = None,
              parts: Sequence[Part] = ()) -> Sink:
    """`reading`: only to read the store back (the CLI), so nothing is started for writing."""
    return config.open(reading=reading, observe=observe, parts=parts)


def sink_label(index: int, type_: str) -> str:
    """How /readyz, the metrics and `check` name a sink: its place in the config and its type."""
    return f"sinks.{index}:{type_}"


__all__ = ["Part", "Sink", "Store", "open_sink", "sink_label"]
