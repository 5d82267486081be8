"""The Kubernetes streaming protocols (exec, attach, port-forward), server side, in Python.

No maintained Python library speaks SPDY/3.1, which client-go still uses, so this package has
its own small stack:

    spdy.py           SPDY/3.1 frame codec and zlib header blocks (no I/O)
    session.py        stream multiplexer on asyncio, fed from any byte transport
    remotecommand.py  exec/attach over SPDY streams or websocket channels (v1..v5)
    portforward.py    port-forward over SPDY, SPDY-in-websocket, or websocket channels
    server.py         aiohttp handlers: `serve_exec`, `serve_portforward`
    backend.py        the interfaces a runtime implements (ExecBackend, PortForwardBackend)
    local.py          host-process / host-port backends (tests; base of the runtime's)
    client.py         the client side, for our CLI and for tests
"""

from cri.streaming.backend import (
    AsyncReader,
    AsyncWriter,
    ExecBackend,
    ExecError,
    ExecIO,
    ExecOptions,
    PortForwardBackend,
    TerminalSize,
)
from cri.streaming.server import exec_handler, portforward_handler, serve_exec, serve_portforward

__all__ = [
    "AsyncReader",
    "AsyncWriter",
    "ExecBackend",
    "ExecError",
    "ExecIO",
    "ExecOptions",
    "PortForwardBackend",
    "TerminalSize",
    "exec_handler",
    "portforward_handler",
    "serve_exec",
    "serve_portforward",
]
