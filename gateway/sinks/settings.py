"""Each sink type's keys in config.yaml, and how it opens: the one place a sink type is named.

Kept out of gateway/sinks/__init__.py because the SQLite writer process imports that package and
needs no pydantic.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gateway.sinks.base import Part, Sink
    from gateway.sinks.batch import Observe


class SinkSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str  # each type narrows it to its own Literal: the discriminator
    store: ClassVar[bool] = False  # readable back: serves /v1 and the CLI's reads

    def resolved(self, base: Path) -> SinkSettings:
        """With file paths made absolute against the config file's folder."""
        return self

    def target(self) -> tuple[str, str]:
        """(what it writes to, said as "file" or "database"): two sinks may not share one."""
        raise NotImplementedError

    def open(self, *, reading: bool = False, parts: Sequence[Part] = (),
             observe: Observe | None = None) -> Sink:
        """The sink; `reading`: only to read the store back (the CLI), nothing started for writing.
        `parts`: what adds rows to a store's write (ignored by a sink that is not a store);
        `observe`: takes the seconds each write took (the sink's gateway_sink_write_seconds)."""
        raise NotImplementedError


class LogSinkConfig(SinkSettings):
    type: Literal["log"]
    path: str = "-"

    def resolved(self, base: Path) -> LogSinkConfig:
        return self if self.path == "-" else self.model_copy(update={"path": str((base / self.path).resolve())})

    def target(self) -> tuple[str, str]:
        return self.path, "standard output" if self.path == "-" else "file"

    def open(self, *, reading: bool = False, parts: Sequence[Part] = (),
             observe: Observe | None = None) -> Sink:
        from gateway.sinks.log import LogSink

        return LogSink(self.path, observe=observe)


class SQLiteSinkConfig(SinkSettings):
    type: Literal["sqlite"]
    store: ClassVar[bool] = True
    path: str = "gateway.db"
    synchronous: Literal["full", "normal"] = "full"  # full: a commit survives power loss too
    busy_timeout_ms: int = Field(default=5000, ge=0)
    max_batch: int = Field(default=256, ge=1)
    # The WAL's bound (SPEC §12): past it the checkpointer restarts the WAL, and SQLite trims the
    # file back to it; a burst the PASSIVE checkpoints cannot keep up with no longer grows it for good.
    wal_limit_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)

    def resolved(self, base: Path) -> SQLiteSinkConfig:
        return self.model_copy(update={"path": str((base / self.path).resolve())})

    def target(self) -> tuple[str, str]:
        return self.path, "file"

    def open(self, *, reading: bool = False, parts: Sequence[Part] = (),
             observe: Observe | None = None) -> Sink:
        from gateway.sinks.sqlite import SQLiteSink

        return SQLiteSink(self.path, synchronous=self.synchronous, busy_timeout_ms=self.busy_timeout_ms,
                          max_batch=self.max_batch, writer=not reading, parts=parts, observe=observe,
                          wal_limit_bytes=self.wal_limit_bytes)


class PostgresSinkConfig(SinkSettings):
    type: Literal["postgres"]
    store: ClassVar[bool] = True
    dsn: str
    pool_size: int = Field(default=10, ge=1)
    max_batch: int = Field(default=256, ge=1)

    def target(self) -> tuple[str, str]:
        return self.dsn, "database"

    def open(self, *, reading: bool = False, parts: Sequence[Part] = (),
             observe: Observe | None = None) -> Sink:
        from gateway.sinks.postgres import PostgresSink

        return PostgresSink(self.dsn, pool_size=self.pool_size, max_batch=self.max_batch, parts=parts,
                            observe=observe, folding=not reading)


# The registry: a new sink type is its module, one class above and one entry here.
SINK_TYPES: dict[str, type[SinkSettings]] = {
    "log": LogSinkConfig, "sqlite": SQLiteSinkConfig, "postgres": PostgresSinkConfig,
}
SinkConfig = Annotated[LogSinkConfig | SQLiteSinkConfig | PostgresSinkConfig, Field(discriminator="type")]
