"""Backends that run host processes and dial host ports.

Used by the tests and as the building block of the runtime's backend: a container exec is a
host process too, started through `nsenter`/the shim, so `ProcessExecBackend(prefix=[...])`
carries the pty and pipe plumbing for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import termios
from collections.abc import Sequence

from cri.streaming.backend import AsyncReader, AsyncWriter, ExecError, ExecIO, ExecOptions, TerminalSize

READ_SIZE = 32 * 1024


def set_winsize(fd: int, size: TerminalSize) -> None:
    if size.width > 0 and size.height > 0:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))


async def _copy_in(src: AsyncReader, proc_stdin: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(READ_SIZE):
            proc_stdin.write(chunk)
            await proc_stdin.drain()
    except (ConnectionError, BrokenPipeError):
        pass
    finally:
        proc_stdin.close()


async def _copy_out(src: asyncio.StreamReader, dst: AsyncWriter | None) -> None:
    while chunk := await src.read(READ_SIZE):
        if dst is not None:
            with contextlib.suppress(ConnectionError):
                await dst.write(chunk)


class ProcessExecBackend:
    """Runs `prefix + command` on the host; with a tty, on a fresh pty whose size follows the
    client's resize events."""

    def __init__(
        self,
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
        attach_command: Sequence[str] = (),
    ):
        self.prefix = list(prefix)
        self.env = env
        self.attach_command = list(attach_command)

    async def attach(self, options: ExecOptions, io: ExecIO) -> int:
        if not self.attach_command:
            raise ExecError("attach is not supported by this backend")
        return await self._run([*self.attach_command], options, io)

    async def exec(self, options: ExecOptions, io: ExecIO) -> int:
        return await self._run(options.command, options, io)

    async def _run(self, command: list[str], options: ExecOptions, io: ExecIO) -> int:
        argv = self.prefix + command
        try:
            if options.tty:
                return await self._run_tty(argv, io)
            return await self._run_pipes(argv, io)
        except FileNotFoundError as e:
            raise ExecError(f"executable not found: {e.filename or argv[0]}") from e

    async def _run_pipes(self, argv: list[str], io: ExecIO) -> int:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if io.stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        assert proc.stdout and proc.stderr
        feeder = asyncio.ensure_future(_copy_in(io.stdin, proc.stdin)) if io.stdin and proc.stdin else None
        try:
            await asyncio.gather(_copy_out(proc.stdout, io.stdout), _copy_out(proc.stderr, io.stderr))
            return await proc.wait()
        finally:
            if feeder:
                feeder.cancel()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def _run_tty(self, argv: list[str], io: ExecIO) -> int:
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        sizes = aiter(io.resize)
        # The client sends its size right after the streams open; a shell started before it
        # arrives would see 0x0, so give it a moment.
        with contextlib.suppress(TimeoutError, StopAsyncIteration):
            set_winsize(master, await asyncio.wait_for(anext(sizes), 0.5))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                env=self.env,
                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
            )
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        out: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(master, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:  # EIO: every slave fd is closed
                data = b""
            if not data:
                loop.remove_reader(master)
            out.put_nowait(data)

        loop.add_reader(master, readable)

        async def pump_out() -> None:
            while chunk := await out.get():
                if io.stdout is not None:
                    with contextlib.suppress(ConnectionError):
                        await io.stdout.write(chunk)

        async def pump_in() -> None:
            assert io.stdin is not None
            while chunk := await io.stdin.read(READ_SIZE):
                view = memoryview(chunk)
                while view:
                    try:
                        view = view[os.write(master, view) :]
                    except BlockingIOError:
                        await asyncio.sleep(0.01)
            # EOF on a terminal is ^D at the start of a line, not closing the fd.
            with contextlib.suppress(OSError):
                os.write(master, b"\x04")

        async def follow_resize() -> None:
            async for size in sizes:
                with contextlib.suppress(OSError):
                    set_winsize(master, size)

        helpers = [asyncio.ensure_future(follow_resize())]
        if io.stdin is not None:
            helpers.append(asyncio.ensure_future(pump_in()))
        try:
            await pump_out()
            return await proc.wait()
        finally:
            loop.remove_reader(master)
            for h in helpers:
                h.cancel()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            os.close(master)


class TcpPortForwardBackend:
    """Dials `host:port`; `port_map` can redirect a pod port to another local port."""

    def __init__(self, host: str = "127.0.0.1", port_map: dict[int, int] | None = None) -> None:
        self.host = host
        self.port_map = port_map or {}

    async def connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port_map.get(port, port))
