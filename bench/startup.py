"""Start-up cost of the command lines, as ratios against a bare interpreter.

Runs each command many times, interleaved so that machine noise hits all of them alike, and
prints the median wall time of each and its ratio to `python -c pass`. The target for the
agentbox verbs is at most 3x. This prints numbers; it never fails on them.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = int(os.environ.get("BENCH_RUNS", "40"))
TARGET = 3.0


def main() -> int:
    bindir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "project").mkdir()
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home)}
        config = home / "config"
        (config / "agentbox").mkdir(parents=True)
        (config / "agentbox" / "agentbox.toml").write_text(f'[state]\nlocation = "{home}"\n')
        with_config = [sys.executable, "-c", "import sys; from agentbox_cli.main import main; "
                       f"sys.exit(main(['paths'], {{'HOME': {str(home)!r}, "
                       f"'XDG_CONFIG_HOME': {str(config)!r}}}))"]  # fmt: skip
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "agentbox --help": [str(bindir / "agentbox"), "--help"],
            "agentbox paths": [str(bindir / "agentbox"), "paths"],
            "agentbox config": [str(bindir / "agentbox"), "config"],
            "loftd paths": [str(bindir / "loftd"), "paths"],
            # With a config file, tomllib is imported too (about 25 ms on the reference host).
            "agentbox paths, config file": with_config,
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for argv in commands.values():  # warm the page cache once
            subprocess.run(argv, env=env, cwd=home / "project", check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
        for _ in range(RUNS):
            for name, argv in commands.items():
                start = time.perf_counter()
                subprocess.run(argv, env=env, cwd=home / "project", check=True,
                               stdout=subprocess.DEVNULL)  # fmt: skip
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["python -c pass"])
    print(f"start-up, median of {RUNS} runs (target for agentbox verbs: <= {TARGET}x)")
    for name, samples in times.items():
        median = statistics.median(samples)
        ratio = median / base
        print(f"  {name:<28} {median * 1000:7.1f} ms  {ratio:4.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
