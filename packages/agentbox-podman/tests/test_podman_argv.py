from pathlib import Path

import pytest

from agentbox_podman import podman
from agentbox_podman.podman import Mount, RunSpec


def test_run_spec_renders_every_option_in_order() -> None:
    spec = RunSpec(
        image="img", name="n", command=("sh", "-c", "x"), detach=True, remove=False,
        interactive=True, tty=True, userns="keep-id", user="0:0", hostname="h", workdir="/w",
        entrypoint="/e", runtime="crun", labels=(("a", "1"),), annotations=(("k", "v"),),
        env=(("E", "x y"),), mounts=(Mount(Path("/src"), "/dst", readonly=True),),
        tmpfs=("/tmp:rw",), devices=("/dev/net/tun",), publish=("8080:80",),
        global_options=("--log-level=debug",),
    )  # fmt: skip
    assert spec.argv() == [
        "podman", "--log-level=debug", "run", "--detach", "--interactive", "--tty",
        "--name", "n", "--runtime", "crun", "--userns", "keep-id", "--user", "0:0",
        "--hostname", "h", "--workdir", "/w", "--entrypoint", "/e", "--label", "a=1",
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
