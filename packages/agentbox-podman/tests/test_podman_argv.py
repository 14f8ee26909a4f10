from pathlib import Path

import pytest

from agentbox_podman import podman
from agentbox_podman.podman import Mount, RunSpec


def test_run_spec_renders_every_option_in_order() -> None:
    # podman-run(1): `--network=mode` where mode `none` creates a network namespace with no
    # interfaces configured but loopback; every option takes its value as the next word
    spec = RunSpec(
        image="img", name="n", command=("sh", "-c", "x"), detach=True, remove=False,
        interactive=True, tty=True, userns="keep-id", user="0:0", hostname="h", workdir="/w",
        entrypoint="/e", runtime="crun", network="none", labels=(("a", "1"),),
        annotations=(("k", "v"),),
        env=(("E", "x y"),), mounts=(Mount(Path("/src"), "/dst", readonly=True),),
        tmpfs=("/tmp:rw",), devices=("/dev/net/tun",), publish=("8080:80",),
        global_options=("--log-level=debug",),
    )  # fmt: skip
    assert spec.argv() == [
        "podman", "--log-level=debug", "run", "--detach", "--interactive", "--tty",
        "--name", "n", "--runtime", "crun", "--userns", "keep-id", "--user", "0:0",
        "--hostname", "h", "--workdir", "/w", "--entrypoint", "/e", "--network", "none",
        "--label", "a=1",
        "--annotation", "k=v", "--env", "E=x y", "--volume", "/src:/dst:ro",
        "--tmpfs", "/tmp:rw", "--device", "/dev/net/tun", "--publish", "8080:80",
        "img", "sh", "-c", "x",
    ]  # fmt: skip


def test_minimal_run() -> None:
    assert RunSpec(image="img", name="n").argv() == ["podman", "run", "--rm", "--name", "n", "img"]


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (podman.image_exists("img"), ["podman", "image", "exists", "img"]),
        (podman.pull("img"), ["podman", "pull", "--quiet", "img"]),
        (podman.container_state("c"),
         ["podman", "container", "inspect", "--format",
          "{{.State.Running}} {{.State.ConmonPid}} {{.Id}} {{.ImageName}}", "c"]),
        (podman.remove("c"), ["podman", "rm", "--force", "--ignore", "c"]),
        (podman.ps_json([("a", "1"), ("b", "2")]),
         ["podman", "ps", "--format", "json", "--filter", "label=a=1", "--filter", "label=b=2"]),
        (podman.ps_json([], all_states=True), ["podman", "ps", "--format", "json", "--all"]),
        (podman.unshare("sh", "-c", "x"), ["podman", "unshare", "sh", "-c", "x"]),
        (podman.info_graph_driver(),
         ["podman", "info", "--format", "{{.Store.GraphDriverName}}"]),
        (podman.logs("c"), ["podman", "logs", "--tail", "20", "c"]),
        (podman.port("c"), ["podman", "port", "c"]),
        (podman.image_mount("img"), ["podman", "image", "mount", "img"]),
        (podman.image_unmount("img"), ["podman", "image", "unmount", "img"]),
    ],
)  # fmt: skip
def test_builders(built: list[str], expected: list[str]) -> None:
    assert built == expected


D = "--log-level=debug"  # podman(1): the global "--log-level=level", given before the verb


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (podman.image_exists("img", debug=True), ["podman", D, "image", "exists", "img"]),
        (podman.pull("img", debug=True), ["podman", D, "pull", "--quiet", "img"]),
        (podman.container_state("c", debug=True),
         ["podman", D, "container", "inspect", "--format",
          "{{.State.Running}} {{.State.ConmonPid}} {{.Id}} {{.ImageName}}", "c"]),
        (podman.remove("c", debug=True), ["podman", D, "rm", "--force", "--ignore", "c"]),
        (podman.ps_json([("a", "1")], all_states=True, debug=True),
         ["podman", D, "ps", "--format", "json", "--all", "--filter", "label=a=1"]),
        (podman.ps_ids(), ["podman", "ps", "--quiet", "--no-trunc"]),
        (podman.ps_ids(debug=True), ["podman", D, "ps", "--quiet", "--no-trunc"]),
        (podman.inspect_annotations(["i1", "i2"]),
         ["podman", "inspect", "--format", "{{.Name}} {{json .Config.Annotations}}", "i1", "i2"]),
        (podman.inspect_annotations(["i1"], debug=True),
         ["podman", D, "inspect", "--format", "{{.Name}} {{json .Config.Annotations}}", "i1"]),
        (podman.unshare("sh", "-c", "x", debug=True), ["podman", D, "unshare", "sh", "-c", "x"]),
        (podman.unshare(debug=True), ["podman", D, "unshare"]),
        (podman.info_graph_driver(debug=True),
         ["podman", D, "info", "--format", "{{.Store.GraphDriverName}}"]),
        (podman.logs("c", debug=True), ["podman", D, "logs", "--tail", "20", "c"]),
        (podman.port("c", debug=True), ["podman", D, "port", "c"]),
        (podman.image_mount("img", debug=True), ["podman", D, "image", "mount", "img"]),
        (podman.image_unmount("img", debug=True), ["podman", D, "image", "unmount", "img"]),
        (RunSpec(image="img", name="n", debug=True).argv(),
         ["podman", D, "run", "--rm", "--name", "n", "img"]),
    ],
    ids=["image-exists", "pull", "container-state", "remove", "ps-json", "ps-ids",
         "ps-ids-debug", "inspect-annotations", "inspect-annotations-debug", "unshare",
         "unshare-prefix", "info", "logs", "port", "image-mount", "image-unmount", "run"],
)  # fmt: skip
def test_debug_is_podmans_own_log_level_before_the_verb(
    built: list[str], expected: list[str]
) -> None:
    assert built == expected


# What `podman --log-level=debug container inspect nope` wrote to stderr on the test host
# (podman 4.3.1, stderr not a terminal), shortened: the error comes before the last records.
DEBUG_STDERR = """\
time="2026-12-01T20:00:50Z" level=info msg="podman filtering at log level debug"
time="2026-12-01T20:00:50Z" level=debug msg="Called inspect.PersistentPreRunE(podman --log-level=debug container inspect nope)"
time="2026-12-01T20:00:50Z" level=warning msg="\\"/\\" is not a shared mount"
Error: inspecting object: no such container nope
time="2026-12-01T20:00:50Z" level=debug msg="Shutting down engines"
DEBU[0000] Shutting down engines
"""  # noqa: E501


def test_tool_messages_drop_only_what_debug_adds() -> None:
    assert podman.tool_messages(DEBUG_STDERR) == [
        'time="2026-12-01T20:00:50Z" level=warning msg="\\"/\\" is not a shared mount"',
        "Error: inspecting object: no such container nope",
    ]
    assert podman.tool_messages("Error: x\n\n") == ["Error: x"]
