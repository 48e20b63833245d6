#!/usr/bin/env python3
"""Run a command; print its wall time and the peak RSS of the process itself
(VmHWM from /proc, sampled until exit), not of its children."""
import subprocess, sys, time

def vmhwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None

start = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
peak = 0
while p.poll() is None:
    v = vmhwm(p.pid)
    if v:
        peak = max(peak, v)
    time.sleep(0.02)
wall = time.monotonic() - start
print(f"{wall:.2f} {peak}")
sys.exit(p.returncode)
