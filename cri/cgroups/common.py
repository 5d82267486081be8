"""Types shared by the v1 and v2 cgroup managers, and Kubernetes' unit conversions."""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from typing import Protocol


class CgroupError(Exception):
    """A cgroup file operation failed; carries the file and value so the log says exactly what."""

    def __init__(self, path: str, value: str | None, cause: OSError | str) -> None:
        self.path, self.value, self.cause = path, value, cause
        why = cause.strerror if isinstance(cause, OSError) else cause
        what = f"writing {value!r} to {path}" if value is not None else f"on {path}"
        super().__init__(f"cgroup: {what}: {why}")


@dataclass
class Resources:
    """What the runtime asks of a cgroup. 0 / None mean "leave unlimited / default"."""

    cpu_shares: int = 0
    cpu_quota: int = 0        # µs per period; 0 or -1: unlimited
    cpu_period: int = 0       # µs; 0: kernel default (100 ms)
    memory_limit: int = 0     # bytes; 0: unlimited
    pids_limit: int = 0       # 0: unlimited
    disable_swap: bool = True

    def validate(self) -> None:
        for name in ("cpu_shares", "cpu_period", "memory_limit", "pids_limit"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (got {getattr(self, name)})")
        if self.cpu_quota < -1:
            raise ValueError(f"cpu_quota must be -1, 0 or positive (got {self.cpu_quota})")
        if self.cpu_period and not 1000 <= self.cpu_period <= 1_000_000:
            raise ValueError(f"cpu_period must be between 1000 and 1000000 µs (got {self.cpu_period})")
        if 0 < self.cpu_quota < 1000:
            raise ValueError(f"cpu_quota must be at least 1000 µs (got {self.cpu_quota})")


@dataclass
class Stats:
    cpu_usage_ns: int = 0
    memory_usage_bytes: int = 0
    memory_working_set_bytes: int = 0
    pids: int = 0
    cpu_nr_throttled: int = 0
    oom_kills: int = 0


class CgroupManager(Protocol):
    """One cgroup (a path relative to the hierarchy root), whatever the cgroup version."""

    path: str
    version: int

    def create(self) -> None: ...
    def apply(self, res: Resources) -> None: ...
    def procs_files(self) -> list[str]: ...
    def join_files(self) -> list[str]: ...
    def pids(self) -> list[int]: ...
    def stats(self) -> Stats: ...
    def oom_file(self) -> str: ...
    def exists(self) -> bool: ...
    def destroy(self, timeout: float = 5.0) -> None: ...


# Kubernetes' conversions (pkg/kubelet/cm), so a kubelet-like caller gets identical numbers.
MIN_SHARES, MAX_SHARES, SHARES_PER_CPU = 2, 262144, 1024
DEFAULT_PERIOD_US, MIN_QUOTA_US = 100_000, 1000


def milli_cpu_to_shares(milli: int) -> int:
    if milli <= 0:
        return MIN_SHARES
    return max(MIN_SHARES, min(MAX_SHARES, milli * SHARES_PER_CPU // 1000))


def milli_cpu_to_quota(milli: int, period: int = DEFAULT_PERIOD_US) -> int:
    if milli <= 0:
        return 0
    return max(MIN_QUOTA_US, milli * period // 1000)


def shares_to_weight(shares: int) -> int:
    """cgroup v2 cpu.weight [1, 10000] from v1 shares [2, 262144] (the runc/Kubernetes mapping)."""
    if shares <= 0:
        return 100
    return 1 + ((shares - 2) * 9999) // 262142


def write(path: str, value: str | int) -> None:
    value = str(value)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise CgroupError(path, value, e) from None


def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        raise CgroupError(path, None, e) from None


def read_int(path: str, default: int = 0) -> int:
    try:
        with open(path) as f:
            v = f.read().strip()
    except OSError:
        return default
    return default if v == "max" else int(v)


def read_keyed(path: str) -> dict[str, int]:
    """Files of `key value` lines: cpu.stat, memory.stat, memory.events, memory.oom_control."""
    out: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(" ")
                try:
                    out[k] = int(v)
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def read_pids(path: str) -> list[int]:
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def rmdir_when_empty(path: str, timeout: float) -> None:
    """rmdir a cgroup, waiting out the short time the kernel needs after the last task died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise CgroupError(path, None, e) from None
            time.sleep(0.01)
