"""``agentbox completion bash|fish|zsh`` and ``loftd completion ...``: the installed commands'
scripts, loaded into the real shells and asked for completions of a few prefixes.

- bash (bash(1), "Programmable Completion"; the ``complete`` and ``compgen`` builtins): the
  script is sourced in ``bash --norc``, ``complete -p`` names its function, and the function is
  called with ``COMP_WORDS``/``COMP_CWORD`` set as bash sets them, then ``COMPREPLY`` is read.
  bash splits ``--opt=value`` into three words (``=`` is in ``COMP_WORDBREAKS``), so both that
  and the one-word form (a ``COMP_WORDBREAKS`` without ``=``) are asked.
- fish (fish's ``complete``: ``complete -C STRING`` prints the completions of the command line
  STRING, ``word<TAB>description`` a line): ``fish --no-config -c 'source FILE; complete -C ...'``.
- zsh: ``compinit`` loads the script from a directory on ``$fpath`` and binds it to the command
  (``$_comps``, zshcompsys(1): ``#compdef``); zsh's completion widgets cannot run without a
  terminal, so the function is then called in a real zsh with ``words``/``CURRENT`` set and
  the completion system's ``compadd``/``_describe``/``_files``/``_normal`` replaced by functions
  that print what they are given (zshcompwid(1), zshcompsys(1)).

The offered verbs and options are compared with ``--help``'s, so completion and the parser's
tables cannot drift apart. ``TASK`` names (stop, kill) come from ``agentbox ps --quiet``: once
against the real ``ps`` (the installed command on PATH), once against a PATH-shadowing
``agentbox`` stub that prints two names and records its argv: a fake of the CLI only for this
test, to show which command the scripts run and that its lines become the candidates (the real
``ps --quiet`` is tested in tests/integration/test_tasks.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
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
    assert bash(home, loftd, "") == ["run", "paths", "config", "completion"]


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


ZSH_ASK = """\
compadd() { [[ $1 == -- ]] && shift; print -rl -- "$@"; }
compset() { :; }
_describe() { print -rl -- "${(@)${(P)4}%%:*}"; }
_files() { print -r -- FILES; }
_normal() { print -r -- "NORMAL ${words[*]} $CURRENT"; }
fpath=("$1" $fpath)
autoload -Uz compinit && compinit -u -D
[[ $_comps[$2] == _$2 ]] || { print -u2 "compinit bound $2 to '$_comps[$2]'"; exit 3; }
shift
words=("$@")
CURRENT=$#
_$1
"""


def zsh(home: Home, prog: Path, *words: str, path: str | None = None) -> list[str]:
    require(shutil.which("zsh") is not None, "zsh is not installed (scripts/test installs it)")
    fpath = home.root / "zsh-functions"
    fpath.mkdir(exist_ok=True)
    shutil.copy(script(home, prog, "zsh"), fpath / f"_{prog.name}")
    done = subprocess.run(
        ["zsh", "-f", "-c", ZSH_ASK, "zsh", fpath, prog.name, *words],
        capture_output=True, text=True, check=False, timeout=30, cwd=home.project,
        env={**home.env, "PATH": path or home.env["PATH"]},
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    return done.stdout.splitlines()


def test_zsh(home: Home, agentbox: Path, loftd: Path, stub: tuple[str, Path]) -> None:
    verbs, _ = help_words(home, agentbox)
    assert zsh(home, agentbox, "") == [v for v in verbs if v != "internal"]
    backends = ["auto", "btrfs-snapshot", "fuse-overlay", "reflink"]
    assert zsh(home, agentbox, "microvm", "--storage", "") == backends
    # compset -P '*=' moves `--storage=` out of the word; zsh then matches the rest itself
    assert zsh(home, agentbox, "microvm", "--storage=fu") == backends
    assert zsh(home, agentbox, "image", "") == ["build"]
    assert zsh(home, agentbox, "microvm", "--guest-init", "") == ["FILES"]
    assert zsh(home, agentbox, "container", "--", "ls", "") == ["NORMAL ls  2"]
    assert zsh(home, loftd, "--rootfs-backend", "") == ["btrfs-snapshot", "fuse-overlay"]
    path, calls = stub
    assert zsh(home, agentbox, "kill", "", path=path) == ["alpha-1", "beta-2"]
    assert calls.read_text() == "ps --quiet\n"
