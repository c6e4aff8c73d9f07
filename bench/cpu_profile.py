"""Where a command's CPU goes: run it, sample /proc every second, then print its wall time, the
machine's busy and idle CPU-seconds over the run, and the CPU of every JVM thread it started,
summed by thread name (digits folded: "C2 CompilerThread0/1" -> "CN CompilerThreN").

    python bench/cpu_profile.py -- .venv/bin/python -m pytest tests/integration/test_own_log.py -q

Machine-wide busy/idle: run it with nothing else running. JVM threads are read per thread from
/proc/<pid>/task, so a thread that lives less than a second may be missed (its CPU is small)."""
from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_idle() -> tuple[float, float]:
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, open("/proc/stat").readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / TICKS, (idle + iowait) / TICKS


def java_threads(last: dict) -> None:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if not os.readlink(f"/proc/{pid}/exe").endswith("/java"):
                continue
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                stat = open(f"/proc/{pid}/task/{tid}/stat").read()
            except OSError:
                continue
            name = re.sub(r"\d+", "N", stat[stat.index("(") + 1:stat.rindex(")")])
            fields = stat.rsplit(")", 1)[1].split()
            last[(pid, tid)] = (name, (int(fields[11]) + int(fields[12])) / TICKS)


def main(argv: list[str]) -> int:
    command = argv[argv.index("--") + 1:] if "--" in argv else argv
    if not command:
        raise SystemExit(__doc__)
    busy0, idle0, start = *machine_busy_idle(), time.time()
    proc, last = subprocess.Popen(command), {}
    while proc.poll() is None:
        java_threads(last)
        time.sleep(1)
    busy1, idle1 = machine_busy_idle()
    by_name = collections.Counter()
    for name, seconds in last.values():
        by_name[name] += seconds
    print(f"wall {time.time() - start:.0f} s, machine busy {busy1 - busy0:.0f} CPU-s, idle {idle1 - idle0:.0f} CPU-s;"
          f" JVM threads {sum(by_name.values()):.0f} CPU-s:", file=sys.stderr)
    for name, seconds in by_name.most_common(12):
        print(f"  {seconds:8.1f}  {name}", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
