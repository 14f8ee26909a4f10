"""`agentbox ps`'s table and JSON (against its schema), `ps --quiet`'s contract with shell
completion, and the refusals of `stop`/`kill` before anything is signalled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentbox_cli.main import VERBS
from agentbox_cli.schema import SPEC
from agentbox_cli.tasks import report
from agentbox_cli.tasks.inventory import Task
from agentbox_state.cli.app import main
from agentbox_testing.schemas import load_schema, problems

NOW = 1796188486.0
TASKS = [
    Task(name="app-0011223344556677", mode="container", project="/home/u/app",
         image="localhost/agentbox:latest", started=NOW - 300, pid=3992,
         container_id="bab39298119cb7c5656ccc1770cdf05628a20408f40d04331404ebf474fea525",
         holds=(("sidecar", "agentbox-nix-app-0123456789ab"),)),
    Task(name="web-8899aabbccddeeff", mode="microvm", project="/home/u/web", image=None,
         started=NOW - 7300, pid=5890, container_id=None,
         holds=(("disk", "/s/web/microvm-nix.raw"), ("disk", "/s/web/microvm-containers.raw"))),
]  # fmt: skip


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s ago"), (59, "59s ago"), (60, "1m ago"), (3599, "59m ago"), (3600, "1h ago"),
     (86399, "23h ago"), (86400 * 3, "3d ago"), (-5, "0s ago")],
    ids=["now", "seconds", "a-minute", "minutes", "an-hour", "hours", "days", "clock-skew"],
)  # fmt: skip
def test_age(seconds: int, shown: str) -> None:
    assert report.age(NOW - seconds, NOW) == shown
    assert report.age(None, NOW) == "-"


def test_the_table_has_aligned_columns() -> None:
    assert report.render_text(TASKS, NOW).splitlines() == [
        "NAME                  MODE       PROJECT      IMAGE                      STARTED  "
        "PID/ID        HOLDS",
        "app-0011223344556677  container  /home/u/app  localhost/agentbox:latest  5m ago   "
        "bab39298119c  sidecar agentbox-nix-app-0123456789ab",
        "web-8899aabbccddeeff  microvm    /home/u/web  -                          2h ago   "
        "5890          disk /s/web/microvm-nix.raw, disk /s/web/microvm-containers.raw",
    ]
    assert report.render_text([], NOW) == "no agentbox task is running"


def test_the_json_is_what_the_schema_describes() -> None:
    schema = load_schema("agentbox_cli.tasks")
    doc = json.loads(report.render_json(TASKS))
    assert problems(doc, schema) == []
    assert doc["schema"] == schema["$id"] == "agentbox-ps/1"
    assert doc["tasks"][1] == {
        "name": "web-8899aabbccddeeff", "mode": "microvm", "project": "/home/u/web",
        "image": None, "started": NOW - 7300, "pid": 5890, "container_id": None,
        "holds": [{"kind": "disk", "what": "/s/web/microvm-nix.raw"},
                  {"kind": "disk", "what": "/s/web/microvm-containers.raw"}],
    }  # fmt: skip
    assert problems(json.loads(report.render_json([])), schema) == []
    broken = {**doc, "tasks": [{**doc["tasks"][0], "mode": "vm", "pid": "3992"}]}
    assert problems(broken, schema) == [  # jsonschema's words
        "$.tasks[0].mode: 'vm' is not one of ['container', 'libkrun', 'microvm', 'loftd']",
        "$.tasks[0].pid: '3992' is not of type 'integer', 'null'",
    ]


def agentbox(tmp_path: Path, *argv: str) -> tuple[int, list[str], list[str]]:
    """The real command line, with no podman on PATH and a state base of its own."""
    environ = {"HOME": str(tmp_path), "PATH": str(tmp_path / "no-tools"),
               "XDG_STATE_HOME": str(tmp_path / "state")}  # fmt: skip
    out: list[str] = []
    err: list[str] = []
    code = main(SPEC, VERBS, list(argv), environ, out=out.append, err=err.append)
    return code, out, err


def test_ps_quiet_prints_only_names_and_nothing_else_even_with_none(tmp_path: Path) -> None:
    assert agentbox(tmp_path, "ps", "--quiet") == (0, [], [])
    assert agentbox(tmp_path, "ps", "-q") == (0, [], [])
    assert agentbox(tmp_path, "ps") == (0, ["no agentbox task is running"], [])


def test_ps_quiet_stays_silent_when_the_listing_fails(tmp_path: Path) -> None:
    tools = tmp_path / "no-tools"
    tools.mkdir()
    (tools / "podman").write_text("#!/bin/sh\necho 'Error: broken' >&2\nexit 125\n")
    (tools / "podman").chmod(0o755)
    assert agentbox(tmp_path, "ps", "--quiet") == (0, [], [])
    code, out, err = agentbox(tmp_path, "ps")
    assert (code, out) == (1, [])
    assert err[0].startswith("agentbox: podman ps failed: ")


@pytest.mark.parametrize("verb", ["stop", "kill"])
def test_stop_and_kill_take_exactly_one_name_of_a_running_task(tmp_path: Path, verb: str) -> None:
    hint = "hint: 'agentbox ps' lists the running tasks by name"
    assert agentbox(tmp_path, verb) == (
        2,
        [],
        [f"agentbox: '{verb}' takes one task name (got none)\n{hint}"],
    )
    assert agentbox(tmp_path, verb, "a", "b") == (
        2,
        [],
        [f"agentbox: '{verb}' takes one task name (got a b)\n{hint}"],
    )
    assert agentbox(tmp_path, verb, "sshd") == (
        1, [], [f"agentbox: no running agentbox task is called 'sshd'; nothing was "
                f"signalled\n{hint}"])  # fmt: skip


def test_the_usage_lines_name_the_task_operand(tmp_path: Path) -> None:
    code, out, _ = agentbox(tmp_path, "stop", "--help")
    assert code == 0
    assert out[0].splitlines()[0] == "usage: agentbox stop [OPTIONS] TASK"
    code, out, _ = agentbox(tmp_path, "ps", "--help")
    assert out[0].splitlines()[0] == "usage: agentbox ps [--json] [-q, --quiet] [OPTIONS]"


def test_loftd_tasks_are_looked_for_where_loftd_keeps_its_state(tmp_path: Path) -> None:
    environ = {"HOME": str(tmp_path)}
    assert report.loftd_base(environ) == tmp_path / ".local/state/loftd"
    assert report.loftd_base({**environ, "XDG_STATE_HOME": "/x"}) == Path("/x/loftd")
    cfg = tmp_path / ".config/loftd/loftd.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('[state]\nlocation = "/srv/s"\n[task-rootfs]\nbackend = "fuse-overlay"\n')
    assert report.loftd_base(environ) == Path("/srv/s/loftd")
    cfg.write_text("[state\n")  # loftd itself says what is wrong with it
    assert report.loftd_base(environ) == tmp_path / ".local/state/loftd"
