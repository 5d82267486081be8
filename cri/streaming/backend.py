"""What the streaming handlers need from whoever actually runs processes and owns ports.

The protocols (SPDY or websocket, exec/attach or port-forward) are all handled in this
package; a backend sees only byte streams, terminal sizes and an exit code. The CRI runtime
implements these against its containers (nsenter into the sandbox, the shim's attach pipes);
`cri.streaming.local` has a host-process version used by the tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable


class TerminalSize(NamedTuple):
    width: int
    height: int


@runtime_checkable
class AsyncReader(Protocol):
    async def read(self, n: int = -1) -> bytes:
        """Up to n bytes (any amount if n < 0); b"" at end of stream."""
        ...


@runtime_checkable
class AsyncWriter(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None:
        """No more data from us (half-close); safe to call twice."""
        ...


@dataclass(frozen=True)
class ExecOptions:
    """The query of an exec/attach request (`command` is empty for attach)."""

    command: list[str] = field(default_factory=list)
    container: str = ""
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    tty: bool = False


async def _no_resizes() -> AsyncIterator[TerminalSize]:
    return
    yield  # pragma: no cover - makes this an async generator


@dataclass
class ExecIO:
    """The client's side of the process. A stream is None when the client did not ask for it;
    with a tty there is never a separate stderr (the terminal merges it)."""

    stdin: AsyncReader | None = None
    stdout: AsyncWriter | None = None
    stderr: AsyncWriter | None = None
    resize: AsyncIterator[TerminalSize] = field(default_factory=_no_resizes)


class ExecError(Exception):
    """The command could not be run at all (no such container, not running, ...). The client
    sees the message as the failure reason, distinct from a command that ran and failed."""


class ExecBackend(Protocol):
    async def exec(self, options: ExecOptions, io: ExecIO) -> int:
        """Run options.command, wire it to io until it exits, return its exit code."""
        ...

    async def attach(self, options: ExecOptions, io: ExecIO) -> int:
        """Attach io to the running container's main process; return when detached/exited."""
        ...


class PortForwardBackend(Protocol):
    async def connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to `port` inside the pod's network namespace. Raise OSError (or
        any exception) to refuse; the message reaches the client's error stream."""
        ...
