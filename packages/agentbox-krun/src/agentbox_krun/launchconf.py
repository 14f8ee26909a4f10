"""``launch.conf``: what the parent decided, handed to the libkrun helper process.

A JSON object (one key per field, ``argv``/``env``/``disks``/``mounts``/``shares`` as lists,
the optional ``nix_overlay`` as an object, optional paths left out when unset), written 0600
in the task's state dir and kept by ``--preserve-debug`` for a person to read. ASCII with
``\\u`` escapes, so any path (even one that is not UTF-8) round-trips. The helper parses it
with the standard library, strictly: unknown, duplicate and missing required keys, and values
of the wrong type, are errors naming the key (``disks[1].readonly``).

The helper reads it on every VM start, so this module imports little: its records are
``NamedTuple``s (``_replace`` gives a changed copy), not dataclasses (whose import brings
``inspect`` and ``ast``), and paths are strings handled by ``os.path``, not ``pathlib``.

Two call orders, as the original had them: agentbox microvm (``krun_set_log_level``, the
workspace over virtiofs) and loftd (``init_log``: ``krun_init_log``; ``nested_virt``: ask
libkrun, enable when supported; the workspace and /nix grafted into the root by the helper,
``mounts`` and ``nix_overlay``, in a mount namespace of its own).

    {
      "task_rootfs": "/s/tasks/t1/rootfs", "ram_mib": 4096, "vcpus": 2,
      "workdir": "/workspace", "exec_path": "/bin/agentbox-guest-init",
      "argv": ["agentbox-guest-init", "microvm", "enter"], "env": ["TERM=xterm"],
      "disks": [{"id": "agentbox-nix", "path": "/s/n.raw", "readonly": false}],
      "mounts": [], "shares": [], "init_log": false, "nested_virt": false,
      "workspace_source": "/src/app", "workspace_tag": "agentbox-workspace",
      "workspace_target": "/workspace"
    }
"""

from __future__ import annotations

import json
import os
import posixpath
from typing import NamedTuple

from agentbox_krun.errors import LaunchConfError
from agentbox_state.recordfile import json_type

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

REQUIRED = ("task_rootfs", "ram_mib", "vcpus", "workdir", "exec_path")
# optional strings: paths, and the image the task root came from (for `agentbox ps`)
OPTIONAL_PATHS = ("workspace_source", "workspace_tag", "workspace_target", "task_lock", "image")
NIX_KEYS = ("lower", "upper", "work", "lease")
DISK_KEYS = ("id", "path", "readonly")
MOUNT_KEYS = ("source", "target", "readonly")
SHARE_KEYS = ("tag", "source", "readonly")
KEYS = (*REQUIRED, "argv", "env", "disks", "mounts", "shares", "init_log", "nested_virt",
        *OPTIONAL_PATHS, "nix_overlay")  # fmt: skip


class Disk(NamedTuple):
    block_id: str
    path: str
    readonly: bool


class Mount(NamedTuple):
    """A host dir bind-mounted into the root at ``target`` (absolute, inside the guest)."""

    source: str
    target: str
    readonly: bool


class Share(NamedTuple):
    """A host dir shared over virtiofs with ``tag`` besides the workspace (the guest init
    mounts it where its contract says); ``readonly``: libkrun refuses the guest's writes."""

    tag: str
    source: str
    readonly: bool = False


class NixOverlay(NamedTuple):
    """A kernel overlay the helper mounts on ``<task_rootfs>/nix`` in its own mount namespace
    (loftd's host ``/nix``): the image's /nix below, the workspace's persistent upper above.
    ``lease`` is the lock file the helper holds while the VM runs: one overlay per upper."""

    lower: str
    upper: str
    work: str
    lease: str


class LaunchConf(NamedTuple):
    task_rootfs: str
    ram_mib: int
    vcpus: int
    workdir: str
    exec_path: str
    argv: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # KEY=VALUE
    disks: tuple[Disk, ...] = ()
    workspace_source: str | None = None
    workspace_tag: str | None = None
    workspace_target: str | None = None
    nix_overlay: NixOverlay | None = None
    mounts: tuple[Mount, ...] = ()
    shares: tuple[Share, ...] = ()
    init_log: bool = False
    nested_virt: bool = False  # "auto": enabled when krun_check_nested_virt says supported
    task_lock: str | None = None  # held (shared) by the helper while the VM runs
    image: str | None = None  # the image reference the task root came from (only reported)


def document(conf: LaunchConf) -> dict[str, object]:
    """The JSON object for ``conf``: every key, except the optional ones left unset."""
    doc: dict[str, object] = {
        "task_rootfs": conf.task_rootfs, "ram_mib": conf.ram_mib, "vcpus": conf.vcpus,
        "workdir": conf.workdir, "exec_path": conf.exec_path,
        "argv": list(conf.argv), "env": list(conf.env),
        "disks": [{"id": d.block_id, "path": d.path, "readonly": d.readonly} for d in conf.disks],
        "mounts": [{"source": m.source, "target": m.target, "readonly": m.readonly}
                   for m in conf.mounts],
        "shares": [{"tag": sh.tag, "source": sh.source, "readonly": sh.readonly}
                   for sh in conf.shares],
        "init_log": conf.init_log, "nested_virt": conf.nested_virt,
    }  # fmt: skip
    for key in OPTIONAL_PATHS:
        value = getattr(conf, key)
        if value is not None:
            doc[key] = value
    if conf.nix_overlay is not None:
        n = conf.nix_overlay
        doc["nix_overlay"] = {"lower": n.lower, "upper": n.upper, "work": n.work, "lease": n.lease}
    return doc


def render(conf: LaunchConf) -> str:
    return json.dumps(document(conf), indent=2) + "\n"


def write(conf: LaunchConf, path: str | os.PathLike[str]) -> None:
    """Write ``path`` 0600 (it may carry secrets in the environment), atomically."""
    head, name = os.path.split(os.fspath(path))
    tmp = os.path.join(head, f".{name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(render(conf))
    os.replace(tmp, path)


def _json_type(value: object) -> str:
    return json_type(value, integer="a whole number", array="a list")


class _Reader:
    """Typed access to one parsed object; every refusal names the key (``disks[0].path``)."""

    def __init__(self, source: str, obj: object, where: str, keys: tuple[str, ...],
                 required: tuple[str, ...]) -> None:  # fmt: skip
        self.source, self.where = source, where
        if not isinstance(obj, dict):
            raise self.error(f"{where or 'the document'} is {_json_type(obj)}, not an object")
        unknown = [k for k in obj if k not in keys]
        if unknown:
            raise self.error(f"unknown key {self.name(unknown[0])!r}")
        missing = [k for k in required if k not in obj]
        if missing:
            what = f"{where} lacks" if where else "missing required keys:"
            raise self.error(f"{what} {', '.join(missing)}")
        self.obj: dict[str, object] = obj

    def error(self, message: str) -> LaunchConfError:
        return LaunchConfError(f"{self.source}: {message}")

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def typed(self, key: str, check: Callable[[object], bool], kind: str, default: object
              ) -> object:  # fmt: skip
        if key not in self.obj:
            return default
        value = self.obj[key]
        if not check(value):
            raise self.error(f"{self.name(key)} is {_json_type(value)}, not {kind}")
        return value

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.typed(key, lambda v: isinstance(v, str), "a string", default)
        return value if isinstance(value, str) else None

    def string(self, key: str) -> str:
        value = self.text(key)
        assert value is not None  # required keys are there
        return value

    def count(self, key: str) -> int:
        value = self.typed(key, lambda v: type(v) is int, "a whole number", None)
        assert isinstance(value, int)
        if value < 0:
            raise self.error(f"{self.name(key)} is {value}, not a whole number >= 0")
        return value

    def flag(self, key: str) -> bool:
        return self.typed(key, lambda v: isinstance(v, bool), "true or false", False) is True

    def items(self, key: str) -> list[object]:
        value = self.typed(key, lambda v: isinstance(v, list), "a list", [])
        assert isinstance(value, list)
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        items = self.items(key)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise self.error(f"{self.name(key)}[{i}] is {_json_type(item)}, not a string")
        return tuple(str(item) for item in items)

    def objects(self, key: str, keys: tuple[str, ...]) -> list[_Reader]:
        return [_Reader(self.source, item, f"{self.name(key)}[{i}]", keys, keys)
                for i, item in enumerate(self.items(key))]  # fmt: skip


def _no_duplicates(source: str) -> Callable[[list[tuple[str, object]]], dict[str, object]]:
    def build(pairs: list[tuple[str, object]]) -> dict[str, object]:
        found: dict[str, object] = {}
        for key, value in pairs:
            if key in found:
                raise LaunchConfError(f"{source}: duplicate key {key!r}")
            found[key] = value
        return found

    return build


def parse(text: str, source: str = "launch.conf") -> LaunchConf:
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates(source))
    except json.JSONDecodeError as err:
        raise LaunchConfError(f"{source}:{err.lineno}: not JSON: {err.msg} (column {err.colno})"
                              ) from None  # fmt: skip
    doc = _Reader(source, data, "", KEYS, REQUIRED)
    disks = tuple(Disk(d.string("id"), d.string("path"), d.flag("readonly"))
                  for d in doc.objects("disks", DISK_KEYS))  # fmt: skip
    mounts = tuple(Mount(m.string("source"), m.string("target"), m.flag("readonly"))
                   for m in doc.objects("mounts", MOUNT_KEYS))  # fmt: skip
    for i, m in enumerate(mounts):
        # normpath keeps a leading "//" (POSIX lets it mean something else): refused too
        if m.target == "/" or not m.target.startswith("/") or m.target.startswith("//") or \
                m.target != posixpath.normpath(m.target):  # fmt: skip
            raise doc.error(f"mounts[{i}].target {m.target!r} is not a normalised absolute "
                            "guest path below /")  # fmt: skip
    shares = tuple(Share(sh.string("tag"), sh.string("source"), sh.flag("readonly"))
                   for sh in doc.objects("shares", SHARE_KEYS))  # fmt: skip
    seen = {doc.text("workspace_tag")}
    for i, sh in enumerate(shares):
        if not sh.tag or sh.tag in seen:
            raise doc.error(f"shares[{i}].tag {sh.tag!r} is empty or not unique")
        seen.add(sh.tag)
    nix = None
    if "nix_overlay" in doc.obj:
        n = _Reader(source, doc.obj["nix_overlay"], "nix_overlay", NIX_KEYS, NIX_KEYS)
        nix = NixOverlay(*(n.string(k) for k in NIX_KEYS))
    return LaunchConf(
        task_rootfs=doc.string("task_rootfs"), ram_mib=doc.count("ram_mib"),
        vcpus=doc.count("vcpus"), workdir=doc.string("workdir"),
        exec_path=doc.string("exec_path"), argv=doc.strings("argv"), env=doc.strings("env"),
        disks=disks, mounts=mounts, shares=shares, init_log=doc.flag("init_log"),
        nested_virt=doc.flag("nested_virt"), task_lock=doc.text("task_lock"),
        workspace_source=doc.text("workspace_source"), workspace_tag=doc.text("workspace_tag"),
        workspace_target=doc.text("workspace_target"), nix_overlay=nix, image=doc.text("image"),
    )  # fmt: skip


def read(path: str | os.PathLike[str]) -> LaunchConf:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise LaunchConfError(f"cannot read {path}: {err}") from err
    return parse(text, os.fspath(path))
