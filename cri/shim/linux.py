"""Thin ctypes wrappers over the Linux calls Python 3.11's os module lacks.

Stdlib only on purpose: this module is imported by the per-pod shim, whose
memory budget (a few MiB per pod) rules out anything beyond ctypes. The
runtime process imports it too, for the netns bind mount and the shm tmpfs.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2

_SYS_PIVOT_ROOT = 155
_SYS_CAPSET = 126
_SYS_SETNS = 308
_SYS_UNSHARE = 272
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.syscall.restype = ctypes.c_long


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def _error(what: str, path: str | None = None) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}", path)


# The wrappers below run ~50 times per container start, in the child before execve:
# they build their error message only when the call failed.
def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) < 0:
        raise _error(f"mount {source!r} on {target!r} ({fstype or 'bind'})", target)


def umount(target: str, flags: int = 0) -> None:
    if _libc.umount2(_b(target), flags) < 0:
        raise _error(f"umount {target!r}", target)


def unshare(flags: int) -> None:
    _check(_libc.syscall(_SYS_UNSHARE, ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.syscall(_SYS_SETNS, ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def setns_path(path: str, nstype: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, nstype)
    except OSError as e:
        raise OSError(e.errno, f"setns {path}: {os.strerror(e.errno or 0)}", path) from None
    finally:
        os.close(fd)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(_SYS_PIVOT_ROOT, _b(new_root), _b(put_old)), "pivot_root", new_root)


def sethostname(name: str) -> None:
    b = name.encode()
    _check(_libc.sethostname(b, len(b)), "sethostname")


def prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    ret = _libc.prctl(option, a2, a3, a4, a5)
    if ret < 0:
        raise _error(f"prctl({option})")
    return ret


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the three capability sets of the calling thread from 64-bit masks."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        sh = 32 * i
        data[i].effective = (effective >> sh) & 0xFFFFFFFF
        data[i].permitted = (permitted >> sh) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> sh) & 0xFFFFFFFF
    _check(_libc.syscall(_SYS_CAPSET, ctypes.byref(hdr), ctypes.byref(data)), "capset")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_seccomp_bpf(program: bytes) -> None:
    """Install a classic-BPF seccomp filter compiled earlier by libseccomp (8 bytes per insn)."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0), "seccomp")


_SYS_RT_SIGACTION = 13  # x86_64
_SIGSET_BYTES = 8


def inherited_ignored_signals() -> list[int]:
    """Signals this process inherited as ignored (SigIgn in /proc/self/status).

    An ignored disposition survives fork and execve, so whatever the runtime's own
    parent ignored (a shell's background job ignores SIGINT/SIGQUIT, some launchers
    ignore glibc's reserved real-time signals) would leak into every container."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("SigIgn:"):
                mask = int(line.split()[1], 16)
                return [n + 1 for n in range(64) if mask >> n & 1]
    return []


def default_signal(sig: int) -> None:
    """Set `sig` to SIG_DFL with the raw syscall: glibc refuses 32 and 33 (its own)."""
    act = (ctypes.c_ulong * 4)(0, 0, 0, 0)  # handler SIG_DFL, flags, restorer, empty mask
    _check(_libc.syscall(_SYS_RT_SIGACTION, ctypes.c_int(sig), ctypes.byref(act), None,
                         ctypes.c_size_t(_SIGSET_BYTES)), f"rt_sigaction({sig})")


def start_time(pid: int) -> int:
    """Field 22 of /proc/pid/stat (clock ticks since boot): with the pid it identifies a
    process across pid reuse. 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return 0
