"""Network-namespace access that is fast and thread-safe.

Why not ``pyroute2.IPRoute(netns=...)``: in pyroute2 0.9 it forks a helper process
to create the socket (tens of ms) and, with its default flags, *creates* a missing
namespace, which would hide a wrong ``CNI_NETNS``. Instead we validate the path
ourselves and create the netlink socket in a short-lived thread that has called
``setns(2)``. A network namespace switch applies to the calling thread only, and a
socket stays bound to the namespace it was created in, so the caller's thread
(and every other thread of the runtime) never leaves the host namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from cni.spec import ERR_INVALID_ENV, ERR_UNKNOWN_CONTAINER, CNIError

if TYPE_CHECKING:
    from pyroute2.iproute.linux import IPRoute

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # ioctl on an nsfs fd: which kind of namespace it is
NETLINK_ROUTE = 0

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def open_netns(path: str) -> int:
    """Open and validate a netns path; return an O_CLOEXEC fd the caller closes.

    A path that does not exist means the container is gone (code 3); a path that
    exists but is not a network namespace is a bad ``CNI_NETNS`` (code 4).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CNIError(ERR_UNKNOWN_CONTAINER, "network namespace does not exist", f"CNI_NETNS={path}") from None
    except OSError as e:
        raise CNIError(ERR_INVALID_ENV, "cannot open CNI_NETNS", f"{path}: {e.strerror}") from None
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        kind = -1
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise CNIError(ERR_INVALID_ENV, "CNI_NETNS is not a network namespace", f"CNI_NETNS={path}")
    return fd


def run_in_netns(fd: int, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread that has joined the namespace ``fd``.

    Anything ``fn`` opens that is namespace-bound (sockets, /proc/sys/net files)
    stays bound to that namespace after the thread ends.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns: {os.strerror(err)}")
            box["value"] = fn()
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target, name="cni-netns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _netlink_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)


def iproute(fd: int | None = None) -> IPRoute:
    """An IPRoute on the host (``fd`` None) or inside the namespace ``fd``.

    groups=0: a short-lived request socket must not subscribe to broadcast
    events it would then have to buffer.
    """
    from pyroute2.iproute.linux import IPRoute  # the submodule: see cni.skel.lean_pyroute2_import

    if fd is None:
        return IPRoute(groups=0)
    return IPRoute(use_socket=run_in_netns(fd, _netlink_socket), groups=0)


_local = threading.local()


def host_iproute() -> IPRoute:
    """This thread's cached host-namespace IPRoute (do not close it).

    Creating an IPRoute costs ~1 ms (socket + asyncio loop) — a tenth of an
    ADD — and the host namespace never changes, so each thread keeps one.
    pyroute2's sync API runs its own event loop, so call the plugins from plain
    threads (e.g. ``asyncio.to_thread``), not from inside a running event loop.
    """
    ipr = getattr(_local, "host", None)
    if ipr is None:
        ipr = _local.host = iproute()
    return ipr


def drop_host_iproute() -> None:
    """Forget (and close) this thread's cached IPRoute, e.g. after a socket error."""
    ipr = getattr(_local, "host", None)
    _local.host = None
    if ipr is not None:
        with contextlib.suppress(Exception):
            ipr.close()


@contextlib.contextmanager
def netns_iproute(path: str) -> Iterator[tuple[int, IPRoute]]:
    """Open ``path`` (validated) and yield ``(fd, IPRoute inside it)``; close both after."""
    fd = open_netns(path)
    try:
        ipr = iproute(fd)
        try:
            yield fd, ipr
        finally:
            ipr.close()
    finally:
        os.close(fd)


def write_sysctl(path: str, value: str, fd: int | None = None) -> None:
    """Write a /proc/sys value on the host or, with ``fd``, inside that namespace."""

    def do() -> None:
        with open(path, "w") as f:
            f.write(value)

    if fd is None:
        do()
    else:
        run_in_netns(fd, do)


def read_sysctl(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        if e.errno == errno.ENOENT:
            return ""
        raise
