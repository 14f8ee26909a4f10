"""``agentbox completion bash|fish|zsh`` and ``loftd completion ...``: the installed commands'
scripts, loaded into the real shells and asked for completions of a few prefixes.

- bash (bash(1), "Programmable Completion"; the ``complete`` and ``compgen`` builtins): the
  script is sourced in ``bash --norc``, ``complete -p`` names its function, and the function is
  called with ``COMP_WORDS``/``COMP_CWORD`` set as bash sets them, then ``COMPREPLY`` is read.
  bash splits ``--opt=value`` into three words (``=`` is in ``COMP_WORDBREAKS``), so both that
  and the one-word form (a ``COMP_WORDBREAKS`` without ``=``) are asked.
- fish (fish's ``complete``: ``complete -C STRING`` prints the completions of the command line
  STRING, ``word<TAB>description`` a line): ``fish --no-config -c 'source FILE; complete -C ...'``.
- bash and zsh at the keyboard: an interactive shell on a pseudo-terminal, the script loaded as
  a user installs it (bash: sourced; zsh: ``compinit`` from a directory on ``$fpath``,
  zshcompsys(1) ``#compdef``), a line typed and TAB pressed; the line editor's result is read
  back from the screen.

The offered verbs and options are compared with ``--help``'s, so completion and the parser's
tables cannot drift apart. ``TASK`` names (stop, kill) come from ``agentbox ps --quiet``: once
against the real ``ps`` (the installed command on PATH), once against a PATH-shadowing
``agentbox`` stub that prints two names and records its argv: a fake of the CLI only for this
test, to show which command the scripts run and that its lines become the candidates (the real
``ps --quiet`` is tested in tests/integration/test_tasks.py).
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentbox_testing import require

TYPE_CHECKING = False
if TYPE_CHECKING:
    from conftest import Home

# bash calls a `complete -F` function with the command's name, the word being completed and the
# one before it; COMP_WORDS and COMP_CWORD set; it reads the candidates from COMPREPLY
BASH_ASK = """\
source "$1" || exit 9
shift
func=$(complete -p "$1")
func=${func#*-F }
COMP_WORDS=("$@")
COMP_CWORD=$(($# - 1))
"${func%% *}" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\\n' "${COMPREPLY[@]}"
"""


def script(home: Home, prog: Path, shell: str) -> Path:
    done = home.run(prog, "completion", shell)
    assert (done.returncode, done.stderr) == (0, "")
    path = home.root / f"{prog.name}.{shell}"
    path.write_text(done.stdout)
    return path


def bash(home: Home, prog: Path, *words: str, path: str | None = None) -> list[str]:
    """COMPREPLY for the command line ``words`` (the last one is the word at the cursor)."""
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", BASH_ASK, "bash", script(home, prog, "bash"),
         prog.name, *words],
        capture_output=True, text=True, check=False, timeout=30, cwd=home.project,
        env={**home.env, "PATH": path or home.env["PATH"]},
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    return [line for line in done.stdout.splitlines() if line]


def fish(home: Home, prog: Path, line: str, *, path: str | None = None) -> list[str]:
    """The words ``complete -C`` offers for ``PROG line`` (descriptions dropped)."""
    require(shutil.which("fish") is not None, "fish is not installed (scripts/test installs it)")
    file = script(home, prog, "fish")
    done = subprocess.run(
        ["fish", "--no-config", "-c", 'source $argv[1]; complete -C "$argv[2]"', file,
         f"{prog.name} {line}"],
        capture_output=True, text=True, check=False, timeout=30, cwd=home.project,
        env={**home.env, "PATH": path or home.env["PATH"]},
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    return [row.split("\t")[0] for row in done.stdout.splitlines()]


def help_words(home: Home, prog: Path, *verb: str) -> tuple[list[str], list[str]]:
    """The verbs (for the program's help) and long options ``PROG [VERB] --help`` lists."""
    text = home.run(prog, *verb, "--help").stdout
    verbs: list[str] = []
    if not verb:
        block = text.split("verbs:\n")[1].split("\n\n")[0]
        verbs = [row.split()[0] for row in block.splitlines()]
    options = sorted(set(re.findall(r"^  (?:-\w, )?(--[\w-]+)", text, re.MULTILINE)))
    return verbs, options


@pytest.fixture
def stub(tmp_path: Path) -> tuple[str, Path]:
    """A PATH whose ``agentbox`` prints two task names and records how it was called."""
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / "agentbox"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\necho alpha-1\necho beta-2\n')
    fake.chmod(0o755)
    return f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", calls


def test_bash_registers_its_function(home: Home, agentbox: Path, loftd: Path) -> None:
    for prog in (agentbox, loftd):
        done = subprocess.run(
            ["bash", "--norc", "--noprofile", "-c", f'source "$1"; complete -p {prog.name}',
             "bash", script(home, prog, "bash")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert done.stdout == f"complete -F _{prog.name} {prog.name}\n"


def test_bash_verbs_and_options_are_the_parsers(home: Home, agentbox: Path) -> None:
    verbs, options = help_words(home, agentbox)
    shown = [v for v in verbs if v != "internal"]
    assert bash(home, agentbox, "") == shown
    assert bash(home, agentbox, "co") == ["container", "config", "completion"]
    assert bash(home, agentbox, "in") == []  # hidden: internal
    assert sorted(bash(home, agentbox, "--")) == options
    for verb in ("container", "microvm", "image", "ps"):
        assert sorted(bash(home, agentbox, verb, "--")) == help_words(home, agentbox, verb)[1]
    # global options before the verb, the verb's own after it
    assert bash(home, agentbox, "--debug", "microvm", "--st") == ["--storage"]
    assert bash(home, agentbox, "--image", "x", "microvm", "--preserve-debug", "--m") == [
        "--mem"]  # fmt: skip


def test_bash_option_values(home: Home, agentbox: Path, loftd: Path) -> None:
    backends = ["auto", "btrfs-snapshot", "fuse-overlay", "reflink"]
    assert bash(home, agentbox, "microvm", "--storage", "") == backends
    assert bash(home, agentbox, "microvm", "--storage", "=", "") == backends
    assert bash(home, agentbox, "microvm", "--storage", "=") == backends
    assert bash(home, agentbox, "microvm", "--storage", "=", "fu") == ["fuse-overlay"]
    # one word when COMP_WORDBREAKS lacks `=` (bash-completion's own helpers join it back)
    assert bash(home, agentbox, "microvm", "--storage=b") == ["--storage=btrfs-snapshot"]
    assert bash(home, agentbox, "libkrun", "resize", "--target", "") == ["nix", "containers"]
    assert bash(home, agentbox, "image", "build", "--suite", "b") == ["bookworm"]
    assert bash(home, agentbox, "--image", "") == []  # free text
    (home.project / "guest-init.bin").write_text("")
    assert bash(home, agentbox, "microvm", "--guest-init", "gu") == ["guest-init.bin"]
    # loftd's fixed default verb: its options count before any verb word
    assert bash(home, loftd, "--rootfs-backend", "") == ["btrfs-snapshot", "fuse-overlay"]
    assert bash(home, loftd, "") == ["run", "paths", "config", "snapshot", "completion"]


def test_bash_actions_and_after_the_double_dash(home: Home, agentbox: Path) -> None:
    assert bash(home, agentbox, "image", "") == ["build"]
    assert bash(home, agentbox, "libkrun", "") == ["resize", "reset-nix"]
    assert bash(home, agentbox, "completion", "") == ["bash", "fish", "zsh"]
    assert bash(home, agentbox, "image", "build", "") == []
    # after --: commands, then files; nothing of agentbox's
    assert "printf" in bash(home, agentbox, "container", "--", "print")
    assert bash(home, agentbox, "--", "--st") == []
    (home.project / "notes.txt").write_text("")
    assert bash(home, agentbox, "microvm", "--", "cat", "no") == ["notes.txt"]


def test_bash_task_names_come_from_ps_quiet(home: Home, agentbox: Path,
                                            stub: tuple[str, Path]) -> None:  # fmt: skip
    path, calls = stub
    assert bash(home, agentbox, "stop", "", path=path) == ["alpha-1", "beta-2"]
    assert bash(home, agentbox, "kill", "b", path=path) == ["beta-2"]
    assert calls.read_text() == "ps --quiet\nps --quiet\n"
    # the real ps: whatever it lists now, the same names (none in a fresh home without tasks)
    real = f"{agentbox.parent}:{home.env['PATH']}"
    listed = home.run(agentbox, "ps", "--quiet").stdout.split()
    assert bash(home, agentbox, "stop", "", path=real) == listed


def test_fish(home: Home, agentbox: Path, loftd: Path, stub: tuple[str, Path]) -> None:
    assert fish(home, agentbox, "co") == ["completion", "config", "container"]
    verbs, options = help_words(home, agentbox)
    assert sorted(fish(home, agentbox, "")) == sorted(v for v in verbs if v != "internal")
    assert sorted(fish(home, agentbox, "--")) == options
    container = help_words(home, agentbox, "container")[1]
    assert sorted(fish(home, agentbox, "container --")) == container
    assert fish(home, agentbox, "--debug microvm --st") == ["--storage"]
    assert fish(home, agentbox, "microvm --storage ") == ["auto", "btrfs-snapshot", "fuse-overlay",
                                                          "reflink"]  # fmt: skip
    assert fish(home, agentbox, "microvm --storage=fu") == ["--storage=fuse-overlay"]
    assert fish(home, agentbox, "image build --suite ") == ["bookworm", "trixie"]
    assert fish(home, agentbox, "image ") == ["build"]
    assert fish(home, loftd, "--rootfs-backend ") == ["btrfs-snapshot", "fuse-overlay"]
    assert "printf" in fish(home, agentbox, "container -- printf")
    path, calls = stub
    assert fish(home, agentbox, "stop ", path=path) == ["alpha-1", "beta-2"]
    assert calls.read_text() == "ps --quiet\n"


ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # the line editors' cursor and mode codes


class Terminal:
    """An interactive shell on a pseudo-terminal, its line editor (bash's readline, zsh's ZLE)
    completing what is typed at TAB: the whole path a user's keystroke takes, the shell's own
    splitting of the line (``COMP_WORDBREAKS``) included."""

    def __init__(self, argv: list[str], setup: str, env: dict[str, str], cwd: Path) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: becomes the shell
            os.chdir(cwd)
            os.execvpe(argv[0], argv, {**env, "TERM": "dumb", "INPUTRC": "/dev/null"})
        self.type(f"{setup}; PS1='$ '; echo READ''Y\n")
        self.read(r"\nREADY")

    def read(self, until: str | None, timeout: float = 15.0) -> str:
        """What the shell prints (escape codes removed) until ``until`` (a regex) matches it,
        or, without one, until it has been quiet for 0.3 s."""
        out = ""
        end = time.monotonic() + timeout
        while time.monotonic() < end and not (until and re.search(until, out)):
            ready, _, _ = select.select([self.fd], [], [], 0.3)
            if not ready:
                if until is None:
                    break
                continue
            try:
                out = ESCAPES.sub("", out + os.read(self.fd, 65536).decode())
            except OSError:  # the shell is gone
                break
        assert until is None or re.search(until, out), out
        return out

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def complete(self, line: str, until: str) -> list[str]:
        """The screen's rows after typing ``line`` and TAB, once ``until`` is on it (the edited
        line is the last row)."""
        self.type(line + "\t")
        shown = self.read(until)
        self.type("\x15")  # ^U: the next line starts empty
        self.read(None)
        rows = shown.replace("\x07", "").replace("\r", "\n").split("\n")
        return [row.removeprefix("$ ") for row in rows if row.strip()]

    def close(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.fixture
def terminal(home: Home, agentbox: Path) -> Iterator[Callable[[str], Terminal]]:
    """``terminal(shell)``: bash or zsh with agentbox's script installed as a user would."""
    opened: list[Terminal] = []

    def start(shell: str, path: str | None = None) -> Terminal:
        require(shutil.which(shell) is not None,
                f"{shell} is not installed (scripts/test installs it)")  # fmt: skip
        file = script(home, agentbox, shell)
        if shell == "bash":
            argv = ["bash", "--norc", "--noprofile", "-i"]
            setup = f"source {file}; bind 'set show-all-if-ambiguous on'"
        else:  # zsh: from a directory on $fpath, through compinit (zshcompsys(1): #compdef)
            functions = home.root / "zsh-functions"
            functions.mkdir(exist_ok=True)
            shutil.copy(file, functions / "_agentbox")
            argv = ["zsh", "-f", "-i"]
            setup = f"fpath=({functions} $fpath); autoload -U compinit; compinit -u -D"
        env = {**home.env, "PATH": path or home.env["PATH"]}
        opened.append(Terminal(argv, setup, env, home.project))
        return opened[-1]

    yield start
    for term in opened:
        term.close()


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_at_the_keyboard(shell: str, terminal: Callable[..., Terminal], stub: tuple[str, Path]
                         ) -> None:  # fmt: skip
    path, calls = stub
    term = terminal(shell, path=path)
    typed = {
        "agentbox microvm --storage=fu": "agentbox microvm --storage=fuse-overlay",
        "agentbox microvm --storage fu": "agentbox microvm --storage fuse-overlay",
        "agentbox --debug microvm --st": "agentbox --debug microvm --storage",
        "agentbox image b": "agentbox image build",
        "agentbox image build --suite b": "agentbox image build --suite bookworm",
        "agentbox libkrun resize --target c": "agentbox libkrun resize --target containers",
        "agentbox comp": "agentbox completion",
        "agentbox container -- printen": "agentbox container -- printenv",
        "agentbox stop b": "agentbox stop beta-2",
    }
    for line, completed in typed.items():
        assert term.complete(line, re.escape(completed + " "))[-1] == completed + " "
    # ambiguous: the candidates are listed, then the line is shown again
    rows = term.complete("agentbox co", r"container.*\n.*agentbox co")
    if shell == "zsh":  # one a row, with its description
        assert [row.split()[0] for row in rows[1:-1]] == ["completion", "config", "container"]
    else:  # bash: in columns
        assert [row.split() for row in rows[1:-1]] == [["completion", "config", "container"]]
    assert term.complete("agentbox in", "\x07")[-1] == "agentbox in"  # internal: not offered
    assert calls.read_text() == "ps --quiet\n"
