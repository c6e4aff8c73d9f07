"""Where a command's CPU goes: run it, sample /proc every second, then print its wall time, the
machine's busy and idle CPU-seconds over the run, the CPU of every process it started, summed by
kind (a JVM by its main class and script: "java SparkSubmit train.py"; a Python by its module or
script), and the CPU of every JVM thread, summed by thread name (digits folded: "C2
CompilerThread0/1" -> "CN CompilerThreN").

    python bench/cpu_profile.py -- .venv/bin/python -m pytest tests/integration/test_own_log.py -q

Machine-wide busy/idle: run it with nothing else running. Processes and JVM threads are read from
/proc, so one that lives less than a second may be missed (its CPU is small)."""
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


def process_kind(cmdline: list[str]) -> str:
    """ "java SparkSubmit pipeline.py", "python -m pyspark.daemon", "python train.py", "chmod", and
    "python -c from multiprocessing.spawn" (a ``-c`` program's first two words)."""
    program = os.path.basename(cmdline[0])
    if program == "java":
        main_class = next((a.rsplit(".", 1)[-1] for a in cmdline if a.startswith("org.apache.")), "?")
        script = next((os.path.basename(a) for a in cmdline if a.endswith(".py")), "")
        return f"java {main_class} {script}".rstrip()
    if program.startswith("python"):
        rest = cmdline[1:]
        while rest and rest[0].startswith("-") and rest[0] not in ("-m", "-c"):
            rest = rest[1:]
        if rest[:1] == ["-c"] and len(rest) > 1:     # the code's first words: multiprocessing's
            return f"python -c {' '.join(rest[1].split()[:2])[:40]}"   # spawn_main, a test's probe
        if rest[:1] == ["-m"] and len(rest) > 1:
            return f"python -m {rest[1]}"
        return f"python {os.path.basename(rest[0])}" if rest else "python"
    return program


def descendants(root: int, kinds: dict, cpu: dict) -> None:
    """Record the CPU-seconds so far of ``root`` and every process below it, and each one's kind
    (its latest command line: spark-class's bash becomes the JVM it execs)."""
    children = collections.defaultdict(list)
    stats = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        children[int(fields[1])].append(int(pid))
        stats[int(pid)] = (int(fields[11]) + int(fields[12])) / TICKS
    todo = [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            cmdline = open(f"/proc/{pid}/cmdline").read().split("\0")
        except OSError:
            continue
        if cmdline[0]:                          # empty once it exited (a zombie)
            kinds[pid] = process_kind(cmdline)
        if pid not in kinds:
            continue
        cpu[pid] = max(cpu.get(pid, 0.0), stats.get(pid, 0.0))


def main(argv: list[str]) -> int:
    command = argv[argv.index("--") + 1:] if "--" in argv else argv
    if not command:
        raise SystemExit(__doc__)
    busy0, idle0, start = *machine_busy_idle(), time.time()
    proc, last, kinds, cpu = subprocess.Popen(command), {}, {}, {}
    while proc.poll() is None:
        java_threads(last)
        descendants(proc.pid, kinds, cpu)
        time.sleep(1)
    busy1, idle1 = machine_busy_idle()
    by_name = collections.Counter()
    for name, seconds in last.values():
        by_name[name] += seconds
    print(f"wall {time.time() - start:.0f} s, machine busy {busy1 - busy0:.0f} CPU-s, idle {idle1 - idle0:.0f} CPU-s;"
          f" JVM threads {sum(by_name.values()):.0f} CPU-s:", file=sys.stderr)
    by_kind, count = collections.Counter(), collections.Counter()
    for pid, seconds in cpu.items():
        by_kind[kinds[pid]] += seconds
        count[kinds[pid]] += 1
    print(f"processes {sum(by_kind.values()):.0f} CPU-s (seen at least once; pytest's own included):",
          file=sys.stderr)
    for kind, seconds in by_kind.most_common(15):
        print(f"  {seconds:8.1f}  {kind} (x{count[kind]})", file=sys.stderr)
    print("JVM threads:", file=sys.stderr)
    for name, seconds in by_name.most_common(12):
        print(f"  {seconds:8.1f}  {name}", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
