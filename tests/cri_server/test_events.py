"""GetContainerEvents over the real socket: the runtime's own steps and exits it only observes
(a container's process ends; a pod's infra is killed from outside), also after a restart."""

from __future__ import annotations

import json
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from cri.api import api_pb2 as pb
from kubeletpy.cli.crictl import CRIClient

from .conftest import Daemon, pod_config, run_ctr, wait_state

NAMES = {pb.CONTAINER_CREATED_EVENT: "CREATED", pb.CONTAINER_STARTED_EVENT: "STARTED",
         pb.CONTAINER_STOPPED_EVENT: "STOPPED", pb.CONTAINER_DELETED_EVENT: "DELETED"}


class Stream:
    """A GetContainerEvents call read by a thread into a queue."""

    def __init__(self, cri: CRIClient) -> None:
        self.call = cri.runtime.GetContainerEvents(pb.GetEventsRequest())
        self.q: queue.Queue[pb.ContainerEventResponse] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for ev in self.call:
                self.q.put(ev)
        except grpc.RpcError:
            pass

    def until(self, ident: str, kind: int, timeout: float = 20) -> pb.ContainerEventResponse:
        """Skip events until `ident` gets one of `kind`; fail with what was seen instead."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ev = self.q.get(timeout=0.2)
            except queue.Empty:
                continue
            if ev.container_id == ident and ev.container_event_type == kind:
                return ev
            seen.append((ev.container_id[:12], NAMES[ev.container_event_type]))
        raise AssertionError(f"no {NAMES[kind]} event for {ident[:12]}; saw {seen}")

    def events_for(self, ident: str, settle: float = 0.5) -> list[str]:
        out = []
        while True:
            try:
                ev = self.q.get(timeout=settle)
            except queue.Empty:
                return out
            if ev.container_id == ident:
                out.append(NAMES[ev.container_event_type])


@contextmanager
def stream(cri: CRIClient) -> Iterator[Stream]:
    s = Stream(cri)
    try:
        yield s
    finally:
        s.call.cancel()
        s.thread.join(5)


def test_lifecycle_events_carry_current_statuses(daemon: Daemon) -> None:
    cri = daemon.client
    assert cri is not None
    with stream(cri) as ev:
        pcfg = pod_config()
        sid = cri.run_pod(pcfg)
        assert ev.until(sid, pb.CONTAINER_CREATED_EVENT).pod_sandbox_status.id == sid
        started = ev.until(sid, pb.CONTAINER_STARTED_EVENT)
        assert started.pod_sandbox_status.state == pb.SANDBOX_READY

        cid = run_ctr(cri, sid, pcfg, "quits", ["sh", "-c", "sleep 0.3; exit 3"])
        ev.until(cid, pb.CONTAINER_CREATED_EVENT)
        ev.until(cid, pb.CONTAINER_STARTED_EVENT)
        stopped = ev.until(cid, pb.CONTAINER_STOPPED_EVENT)  # nobody asked: the runtime saw it exit
        mine = {c.id: c for c in stopped.containers_statuses}
        assert mine[cid].state == pb.CONTAINER_EXITED and mine[cid].exit_code == 3

        cri.remove_container(cid)
        deleted = ev.until(cid, pb.CONTAINER_DELETED_EVENT)
        assert cid not in {c.id for c in deleted.containers_statuses}

        infra = int(json.loads(cri.pod_status(sid, verbose=True).info["info"])["pid"])
        os.kill(infra, signal.SIGKILL)  # the pod's infra dies behind the runtime's back
        assert ev.until(sid, pb.CONTAINER_STOPPED_EVENT).pod_sandbox_status.state == pb.SANDBOX_NOTREADY
        cri.stop_pod(sid)
        cri.remove_pod(sid)
        assert ev.until(sid, pb.CONTAINER_DELETED_EVENT).container_id == sid


def test_exits_are_seen_by_a_restarted_runtime(daemon: Daemon) -> None:
    """A container started under one daemon and exiting under the next still yields STOPPED."""
    cri = daemon.client
    assert cri is not None
    pcfg = pod_config()
    sid = cri.run_pod(pcfg)
    cid = run_ctr(cri, sid, pcfg, "long", ["sleep", "3600"])
    wait_state(cri, cid, pb.CONTAINER_RUNNING)
    cri = daemon.restart(signal.SIGKILL)
    try:
        with stream(cri) as ev:
            cri.stop_container(cid, 0)
            ev.until(cid, pb.CONTAINER_STOPPED_EVENT)
            assert ev.events_for(cid) == []  # once, not twice (the stop and the exit watch agree)
    finally:
        cri.stop_pod(sid)
        cri.remove_pod(sid)


def test_a_stream_ends_cleanly_when_the_client_goes(daemon: Daemon) -> None:
    cri = daemon.client
    assert cri is not None
    streams = [Stream(cri) for _ in range(5)]
    for s in streams:
        s.call.cancel()
        s.thread.join(5)
        assert not s.thread.is_alive()
    assert cri.version().runtime_name  # the daemon's workers were given back
