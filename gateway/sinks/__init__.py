"""open_sink(): the sink for one `sinks:` entry of config.yaml."""

from __future__ import annotations

from gateway.config import LogSinkConfig, PostgresSinkConfig, SQLiteSinkConfig
from gateway.sinks.base import Sink, Store


def open_sink(config: LogSinkConfig | SQLiteSinkConfig | PostgresSinkConfig) -> Sink:
    match config:
        case LogSinkConfig():
            from gateway.sinks.log import LogSink

            return LogSink(config.path)
        case SQLiteSinkConfig():
            from gateway.sinks.sqlite import SQLiteSink

            return SQLiteSink(config.path, synchronous=config.synchronous,
                              busy_timeout_ms=config.busy_timeout_ms, max_batch=config.max_batch)
        case PostgresSinkConfig():
            from gateway.sinks.postgres import PostgresSink

            return PostgresSink(config.dsn, pool_size=config.pool_size, max_batch=config.max_batch)
    raise AssertionError(config)


def is_store(sink: Sink) -> bool:
    return hasattr(sink, "timeline")


__all__ = ["Sink", "Store", "is_store", "open_sink"]
