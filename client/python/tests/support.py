"""What the Python tests share: the test database's ids, psql, and waiting
for a condition with a deadline (never a sleep as synchronisation)."""

import os
import shlex
import subprocess
import time

USER = "00000000-0001-4000-8000-%012x"
TENANT = "00000000-0000-4000-8000-%012x"


def psql(sql, background=False):
    """Runs `sql` with $TC_PSQL; returns its output, or the Popen when `background`."""
    argv = shlex.split(os.environ["TC_PSQL"]) + ["-c", sql]
    if background:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def wait_for(cond, timeout=10.0):
    """True once cond() is, polling every 5 ms; its last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return cond()
        time.sleep(0.005)
    return True
