"""ShimLauncher against a stand-in zygote (a tiny script speaking its line protocol), for the
cases a real shim cannot be made to produce on demand: junk on the reply pipe, and a shim
that comes up only after its launcher gave up waiting."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from cri.runtime import shimclient
from cri.runtime.shimclient import ShimError, ShimLauncher

FAKE_ZYGOTE = textwrap.dedent("""
    import json, subprocess, sys, time
    for line in sys.stdin:
        cfg = json.loads(line)
        print("[1]", flush=True)              # junk a broken shim could write
        print("not json", flush=True)
        time.sleep(cfg.get("delay", 0))
        shim = subprocess.Popen(["sleep", "60"], start_new_session=True)
        if "record" in cfg:
            open(cfg["record"], "w").write(str(shim.pid))
        print(json.dumps({"pid": shim.pid, "infra_pid": 0, "req": cfg["req"]}), flush=True)
""")


@pytest.fixture
def launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ShimLauncher:
    fake = tmp_path / "zygote.py"
    fake.write_text(FAKE_ZYGOTE)
    monkeypatch.setattr(shimclient, "SHIM_MAIN", str(fake))
    z = ShimLauncher(str(tmp_path / "shim.log"), prewarm=False)
    yield z
    z.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_junk_lines_do_not_stop_the_reply_reader(launcher: ShimLauncher) -> None:
    pids = [launcher.launch({}, timeout=10)["pid"] for _ in range(3)]
    try:
        assert all(_alive(p) for p in pids)
    finally:
        for p in pids:
            os.kill(p, 9)


def test_a_shim_that_answers_after_the_timeout_is_killed(launcher: ShimLauncher, tmp_path: Path) -> None:
    record = tmp_path / "late.pid"
    with pytest.raises(ShimError, match="in time"):
        launcher.launch({"delay": 1.0, "record": str(record)}, timeout=0.2)
    # the late shim reports in: nobody waits for it any more, so the launcher's reader kills it
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not record.exists():
        time.sleep(0.05)
    late = int(record.read_text())
    while time.monotonic() < deadline and _alive(late):
        time.sleep(0.05)
    assert not _alive(late)
    pid = launcher.launch({}, timeout=10)["pid"]  # and the launcher still works
    os.kill(pid, 9)


def test_launch_after_close_is_refused(launcher: ShimLauncher) -> None:
    launcher.close()
    with pytest.raises(ShimError, match="shutting down"):
        launcher.launch({}, timeout=1)
