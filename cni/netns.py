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
import struct
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from cni.rtnl import RtnlSocket
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


SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCGIFHWADDR, SIOCGIFINDEX = 0x8913, 0x8914, 0x8927, 0x8933
IFF_UP = 0x1


def inet_socket(fd: int) -> socket.socket:
    """A datagram socket inside the namespace ``fd``: interface ioctls on it act there.

    For the few per-interface facts a plugin needs (index, MAC, up/down) an ioctl is
    one syscall, where an IPRoute request builds and decodes a whole netlink message
    set in Python — the bulk of an ADD's CPU when 30 pods start at once.
    """
    return run_in_netns(fd, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC))


def _ifreq(name: str, tail: bytes = b"") -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= 16:
        raise OSError(errno.ENODEV, f"bad interface name {name!r}")
    return struct.pack("16s", raw) + tail.ljust(24, b"\0")


def if_index(s: socket.socket, name: str) -> int:
    return int(struct.unpack_from("i", fcntl.ioctl(s.fileno(), SIOCGIFINDEX, _ifreq(name)), 16)[0])


def if_mac(s: socket.socket, name: str) -> str:
    data = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, _ifreq(name))
    return ":".join(f"{b:02x}" for b in data[18:24])  # sockaddr: family (2 bytes), then the address


def if_flags(s: socket.socket, name: str) -> int:
    return int(struct.unpack_from("H", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, _ifreq(name)), 16)[0])


def if_set_up(s: socket.socket, name: str, up: bool) -> None:
    flags = if_flags(s, name)
    new = flags | IFF_UP if up else flags & ~IFF_UP
    if new != flags:
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, _ifreq(name, struct.pack("H", new)))


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


def host_rtnl() -> RtnlSocket:
    """This thread's cached host-namespace RtnlSocket (cni.rtnl), for the ADD hot path."""
    s = getattr(_local, "rtnl", None)
    if s is None:
        s = _local.rtnl = RtnlSocket()
    return s


def netns_sockets(fd: int) -> tuple[socket.socket, RtnlSocket]:
    """An ioctl socket and an rtnetlink socket inside the namespace ``fd``, made by one setns'd thread."""

    def make() -> tuple[socket.socket, RtnlSocket]:
        inet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            return inet, RtnlSocket()
        except BaseException:
            inet.close()
            raise

    return run_in_netns(fd, make)


def drop_host_iproute() -> None:
    """Forget (and close) this thread's cached host sockets, e.g. after a socket error."""
    ipr = getattr(_local, "host", None)
    rt = getattr(_local, "rtnl", None)
    _local.host = _local.rtnl = None
    if ipr is not None:
        with contextlib.suppress(Exception):
            ipr.close()
    if rt is not None:
        rt.close()


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
