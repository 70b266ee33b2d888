"""open_sink(): the sink for one `sinks:` entry of config.yaml."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.sinks.base import Sink, Store

if TYPE_CHECKING:  # not at run time: the SQLite writer process imports this package and needs no pydantic
    from gateway.config import SinkConfig


def open_sink(config: SinkConfig, *, reading: bool = False) -> Sink:
    """`reading`: only to read the store back (the CLI), so nothing is started for writing."""
    if config.type == "log":
        from gateway.sinks.log import LogSink

        return LogSink(config.path)
    if config.type == "sqlite":
        from gateway.sinks.sqlite import SQLiteSink

        return SQLiteSink(config.path, synchronous=config.synchronous, busy_timeout_ms=config.busy_timeout_ms,
                          max_batch=config.max_batch, writer=not reading)
    if config.type == "postgres":
        from gateway.sinks.postgres import PostgresSink

        return PostgresSink(config.dsn, pool_size=config.pool_size, max_batch=config.max_batch)
    raise AssertionError(config)


def is_store(sink: Sink) -> bool:
    return hasattr(sink, "timeline")


__all__ = ["Sink", "Store", "is_store", "open_sink"]
