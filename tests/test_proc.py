"""proc.py: the one place nixsnake starts programs -- missing tools, failures and
output handled one way."""

from __future__ import annotations

import subprocess
import sys

import pytest

from snakemake_deploy_nixsnake import proc
from snakemake_deploy_nixsnake.errors import Exit, NixsnakeError, ToolMissingError


def test_run_captures_and_fails_with_the_tail_of_stderr():
    r = proc.run([sys.executable, "-c", "print('out'); import sys; print('err', file=sys.stderr)"])
    assert (r.returncode, r.stdout, r.stderr) == (0, "out\n", "err\n")
    with pytest.raises(NixsnakeError) as e:
        proc.run(
            [sys.executable, "-c", "import sys; [print(i, file=sys.stderr) for i in range(30)]; sys.exit(3)"],
            what="counting",
            code=Exit.UNAVAILABLE,
        )
    assert e.value.code == Exit.UNAVAILABLE
    assert e.value.message.startswith("counting failed (exit 3): 18\n19\n") and e.value.message.endswith("29")
    assert proc.run([sys.executable, "-c", "import sys; sys.exit(4)"], check=False).returncode == 4


def test_missing_tool_is_69_with_the_install_hint(tmp_path):
    with pytest.raises(ToolMissingError) as e:
        proc.run(["mksquashfs-that-is-not-there"])
    assert e.value.code == 69
    with pytest.raises(ToolMissingError) as e:
        proc.require("mksquashfs", env={"PATH": str(tmp_path)})
    assert e.value.code == 69 and "apt-get install squashfs-tools" in str(e.value)
    assert proc.which("sh", env={"PATH": "/bin:/usr/bin"}) is not None


def test_timeout_is_a_clear_error():
    with pytest.raises(NixsnakeError) as e:
        proc.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.3, what="sleeping")
    assert e.value.code == Exit.UNAVAILABLE and "sleeping timed out after 0.3s" in e.value.message


def test_stream_feeds_stderr_lines_and_returns_stdout():
    lines: list[str] = []
    out = proc.stream(
        [sys.executable, "-c", "import sys; print('a', file=sys.stderr); print('result'); print('b', file=sys.stderr)"],
        on_line=lines.append,
    )
    assert out == "result\n" and lines == ["a", "b"]
    with pytest.raises(NixsnakeError) as e:
        proc.stream([sys.executable, "-c", "import sys; print('why', file=sys.stderr); sys.exit(1)"], what="x", keep=5)
    assert e.value.message == "x failed (exit 1); last log lines:\nwhy"


def test_pipe_into_feeds_stdin_and_reports_the_program_dying_early():
    got = proc.pipe_into([sys.executable, "-c", "import sys; print(len(sys.stdin.buffer.read()))"],
                         lambda w: w.write(b"x" * 100_000))  # fmt: skip
    assert got.strip() == "100000"
    with pytest.raises(NixsnakeError) as e:  # the reader exits at once: broken pipe -> its status and log
        proc.pipe_into([sys.executable, "-c", "import sys; print('bye', file=sys.stderr); sys.exit(7)"],
                       lambda w: w.write(b"y" * 10_000_000), what="reader")  # fmt: skip
    assert e.value.message.startswith("reader failed (exit 7)") and "bye" in e.value.message


def test_pipe_into_kills_the_program_when_the_writer_fails():
    def boom(w):
        w.write(b"partial")
        raise ValueError("writer broke")

    with pytest.raises(NixsnakeError) as e:
        proc.pipe_into([sys.executable, "-c", "import sys, time; sys.stdin.read(); time.sleep(30)"], boom, what="sink")
    assert e.value.message == "sink: feeding its input failed: writer broke"


def test_interrupt_stops_children_of_worker_threads_and_every_later_call():
    """In a fresh interpreter (the flag is for the whole process): a worker thread runs
    ``sleep 60``; interrupt() from the main thread ends it with Interrupted within a
    second, and no program starts after that."""
    script = """
import threading, time
from snakemake_deploy_nixsnake import proc
from snakemake_deploy_nixsnake.errors import Interrupted
seen = []
def worker():
    try:
        proc.run(["sleep", "60"])
    except Interrupted as exc:
        seen.append(exc.code)
t = threading.Thread(target=worker); t.start()
time.sleep(0.3); t0 = time.monotonic(); proc.interrupt(); t.join(5)
assert seen == [130] and time.monotonic() - t0 < 1, seen
try:
    proc.run(["true"]); print("started after interrupt")
except Interrupted:
    print("ok")
"""
    cp = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert cp.stdout.strip() == "ok", cp.stderr
