"""A small ctypes binding to libseccomp: enough to build a filter and export its BPF.

Why export instead of loading here: the runtime compiles once per container
(libseccomp, a few ms) and hands the shim raw BPF, which the forked child
installs with one prctl right before execve. The shim never loads libseccomp.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import tempfile

ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_TRAP = 0x00030000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000
_ACT_ERRNO = 0x00050000
_ACT_TRACE = 0x7FF00000
_ACT_NOTIFY = 0x7FC00000

CMP_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
           "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_FLTATR_CTL_NNP = 3       # libseccomp sets no_new_privs on load; we export, so turn it off
_NR_SCMP_ERROR = -1


class SeccompError(Exception):
    pass


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def act_errno(n: int) -> int:
    return _ACT_ERRNO | (n & 0xFFFF)


def act_trace(n: int) -> int:
    return _ACT_TRACE | (n & 0xFFFF)


_lib: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
        try:
            _lib = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise SeccompError(f"libseccomp not available ({name}): {e}") from None
        _lib.seccomp_init.restype = ctypes.c_void_p
        _lib.seccomp_init.argtypes = [ctypes.c_uint32]
        _lib.seccomp_release.argtypes = [ctypes.c_void_p]
        _lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        _lib.seccomp_arch_native.restype = ctypes.c_uint32
        _lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        _lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        _lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        _lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                                ctypes.c_uint, ctypes.POINTER(ArgCmp)]
        _lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        _lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return _lib


class Filter:
    """A libseccomp filter context; use as a context manager so it is always released."""

    def __init__(self, default_action: int) -> None:
        self.lib = lib()
        self.ctx = self.lib.seccomp_init(default_action)
        if not self.ctx:
            raise SeccompError(f"seccomp_init({default_action:#x}) failed")
        self.default_action = default_action
        self._rc(self.lib.seccomp_attr_set(self.ctx, _FLTATR_CTL_NNP, 0), "seccomp_attr_set(CTL_NNP)")

    def __enter__(self) -> Filter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lib.seccomp_release(self.ctx)

    @staticmethod
    def _rc(rc: int, what: str) -> None:
        if rc < 0:
            raise SeccompError(f"{what}: {os.strerror(-rc)}")

    def add_arch(self, name: str) -> None:
        token = self.lib.seccomp_arch_resolve_name(name.encode())
        if token == 0:
            raise SeccompError(f"unknown seccomp architecture {name!r}")
        if token == self.lib.seccomp_arch_native():
            return
        rc = self.lib.seccomp_arch_add(self.ctx, token)
        if rc != -17:  # EEXIST
            self._rc(rc, f"seccomp_arch_add({name})")

    @staticmethod
    def resolve(name: str) -> int:
        return lib().seccomp_syscall_resolve_name(name.encode())

    def add_rule(self, action: int, syscall: str, args: list[tuple[int, int, int, int]] = ()) -> bool:
        """Add one rule; False if this kernel/libseccomp does not know the syscall (skipped, like runc)."""
        nr = self.resolve(syscall)
        if nr == _NR_SCMP_ERROR:
            return False
        if action == self.default_action:
            return True
        arr = (ArgCmp * max(1, len(args)))(*[ArgCmp(*a) for a in args])
        rc = self.lib.seccomp_rule_add_array(self.ctx, action, nr, len(args), arr)
        if rc < 0 and len(args) > 1:
            # libseccomp refuses two comparisons on the same argument in one rule;
            # OCI semantics for that case are "any of them", i.e. one rule each.
            for a in args:
                self.add_rule(action, syscall, [a])
            return True
        self._rc(rc, f"seccomp_rule_add({syscall})")
        return True

    def export_bpf(self) -> bytes:
        with tempfile.TemporaryFile() as f:
            self._rc(self.lib.seccomp_export_bpf(self.ctx, f.fileno()), "seccomp_export_bpf")
            f.seek(0)
            return f.read()
