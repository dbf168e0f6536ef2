"""Run the main job (`python -m tinyres train`, its defaults) and record what the README
says about it, into docs/main_job.json: the training time it prints, its test accuracy,
and the machine and commit it ran on.

    python docs/main_job.py            # run it twice: the first run fills Numba's cache

The README quotes the JSON's figures; tests/test_docs.py checks that it does.
"""
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "main_job.json"


def cpu_name():
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_main_job():
    """(seconds the job reports for training, test accuracy %, wall seconds, stdout)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "tinyres", "train"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    wall = time.perf_counter() - start
    trained = float(re.search(r"trained in ([0-9.]+)s", out).group(1))
    accuracy = float(re.search(r"test accuracy ([0-9.]+)%", out).group(1))
    return trained, accuracy, wall, out


def main():
    run_main_job()                                  # warm-up: Numba compiles and caches
    load_before = os.getloadavg()[0]
    trained, accuracy, wall, _ = run_main_job()
    load_after = os.getloadavg()[0]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    record = dict(command="python -m tinyres train", train_seconds=trained,
                  wall_seconds=round(wall, 1), test_accuracy_percent=accuracy,
                  cpu=cpu_name(), cores=os.cpu_count(), python=platform.python_version(),
                  load_average=[round(load_before, 1), round(load_after, 1)],
                  commit=commit, date=time.strftime("%Y-%m-%d"),
                  note="second of two runs (the first fills Numba's cache); load_average: "
                       "the 1-minute load before and after it (other jobs shared the cores)")
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
