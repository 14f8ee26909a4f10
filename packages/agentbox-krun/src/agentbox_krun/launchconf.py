"""``launch.conf``: what the parent decided, handed to the libkrun helper process.

One ``key=<hex of the UTF-8 value>`` per line, so no value can break the format. Written 0600 in
the task's state dir. The parser is strict: unknown or duplicate keys, a line without ``=``,
bad hex, non-UTF-8 and missing required keys are errors naming the line; indexed keys
(``argv.N``, ``env.N``, ``disk.N.field``, ``mount.N.field``) are ordered numerically.

Two call orders, as the original had them: agentbox microvm (``krun_set_log_level``, the
workspace over virtiofs) and loftd (``init_log=1``: ``krun_init_log``; ``nested_virt=auto``:
ask libkrun, enable when supported; the workspace and /nix grafted into the root by the helper,
``mount.N`` and ``nix_*``, in a mount namespace of its own).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agentbox_krun.errors import LaunchConfError

NIX_KEYS = ("nix_lower", "nix_upper", "nix_work", "nix_lease")
SCALARS = ("task_rootfs", "workspace_source", "workspace_tag", "workspace_target", "ram_mib",
           "vcpus", "workdir", "exec_path", "init_log", "nested_virt", "task_lock",
           *NIX_KEYS)  # fmt: skip
REQUIRED = ("task_rootfs", "ram_mib", "vcpus", "workdir", "exec_path")
GROUPS = {"disk": ("id", "path", "readonly"), "mount": ("source", "target", "readonly")}


@dataclass(frozen=True, slots=True)
class Disk:
    block_id: str
    path: str
    readonly: bool


@dataclass(frozen=True, slots=True)
class Mount:
    """A host dir bind-mounted into the root at ``target`` (absolute, inside the guest)."""

    source: str
    target: str
    readonly: bool


@dataclass(frozen=True, slots=True)
class NixOverlay:
    """A kernel overlay the helper mounts on ``<task_rootfs>/nix`` in its own mount namespace
    (loftd's host ``/nix``): the image's /nix below, the workspace's persistent upper above.
    ``lease`` is the lock file the helper holds while the VM runs: one overlay per upper."""

    lower: str
    upper: str
    work: str
    lease: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchConf:
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
    init_log: bool = False
    nested_virt: bool = False  # "auto": enabled when krun_check_nested_virt says supported
    task_lock: str | None = None  # held (shared) by the helper while the VM runs

    def lines(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = [
            ("task_rootfs", self.task_rootfs), ("ram_mib", str(self.ram_mib)),
            ("vcpus", str(self.vcpus)), ("workdir", self.workdir), ("exec_path", self.exec_path),
        ]  # fmt: skip
        for key in ("workspace_source", "workspace_tag", "workspace_target", "task_lock"):
            value = getattr(self, key)
            if value is not None:
                out.append((key, value))
        if self.nix_overlay is not None:
            n = self.nix_overlay
            out += [("nix_lower", n.lower), ("nix_upper", n.upper), ("nix_work", n.work),
                    ("nix_lease", n.lease)]  # fmt: skip
        if self.init_log:
            out.append(("init_log", "1"))
        if self.nested_virt:
            out.append(("nested_virt", "auto"))
        out += [(f"argv.{i}", a) for i, a in enumerate(self.argv)]
        out += [(f"env.{i}", e) for i, e in enumerate(self.env)]
        for i, d in enumerate(self.disks):
            out += [(f"disk.{i}.id", d.block_id), (f"disk.{i}.path", d.path),
                    (f"disk.{i}.readonly", "1" if d.readonly else "0")]  # fmt: skip
        for i, m in enumerate(self.mounts):
            out += [(f"mount.{i}.source", m.source), (f"mount.{i}.target", m.target),
                    (f"mount.{i}.readonly", "1" if m.readonly else "0")]  # fmt: skip
        return out


def render(conf: LaunchConf) -> str:
    return "".join(f"{k}={v.encode('utf-8').hex()}\n" for k, v in conf.lines())


def write(conf: LaunchConf, path: Path) -> None:
    """Write ``path`` 0600 (it may carry secrets in the environment), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(render(conf))
    os.replace(tmp, path)


def _indexed(values: Mapping[tuple[str, int], str], prefix: str) -> tuple[str, ...]:
    indexes = sorted(i for p, i in values if p == prefix)
    if indexes != list(range(len(indexes))):
        raise LaunchConfError(f"{prefix}.N indexes are not 0..{len(indexes) - 1}: {indexes}")
    return tuple(values[(prefix, i)] for i in indexes)


def _int(fields: Mapping[str, str], key: str) -> int:
    value = fields[key]
    if not value.isdigit() or not value.isascii():
        raise LaunchConfError(f"{key} is not a whole number: {value!r}")
    return int(value)


def _group(groups: Mapping[str, Mapping[int, Mapping[str, str]]], name: str
           ) -> list[Mapping[str, str]]:  # fmt: skip
    """``name.N.field`` entries in index order, each complete, readonly 0 or 1."""
    found = groups[name]
    if sorted(found) != list(range(len(found))):
        raise LaunchConfError(f"{name}.N indexes are not 0..{len(found) - 1}: {sorted(found)}")
    fields = GROUPS[name]
    for i in range(len(found)):
        entry = found[i]
        if set(entry) != set(fields):
            raise LaunchConfError(f"{name}.{i} needs {', '.join(fields[:-1])} and {fields[-1]}")
        if entry["readonly"] not in ("0", "1"):
            raise LaunchConfError(f"{name}.{i}.readonly is not 0 or 1: {entry['readonly']!r}")
    return [found[i] for i in range(len(found))]


def parse(text: str, source: str = "launch.conf") -> LaunchConf:
    fields: dict[str, str] = {}
    indexed: dict[tuple[str, int], str] = {}
    groups: dict[str, dict[int, dict[str, str]]] = {name: {} for name in GROUPS}
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{source}:{number}"
        key, sep, hexed = line.partition("=")
        if not sep:
            raise LaunchConfError(f"{where}: no '=' in the line")
        try:
            value = bytes.fromhex(hexed).decode("utf-8")
        except ValueError as err:
            kind = "not UTF-8" if isinstance(err, UnicodeDecodeError) else "not valid hex"
            raise LaunchConfError(f"{where}: the value of {key} is {kind}") from None
        parts = key.split(".")
        if key in SCALARS and len(parts) == 1:
            slot: object = key
            seen = key in fields
            fields[key] = value
        elif len(parts) == 2 and parts[0] in ("argv", "env") and parts[1].isdigit():
            slot = (parts[0], int(parts[1]))
            seen = slot in indexed
            indexed[(parts[0], int(parts[1]))] = value
        elif len(parts) == 3 and parts[0] in GROUPS and parts[1].isdigit() \
                and parts[2] in GROUPS[parts[0]]:  # fmt: skip
            entry = groups[parts[0]].setdefault(int(parts[1]), {})
            seen = parts[2] in entry
            entry[parts[2]] = value
        else:
            raise LaunchConfError(f"{where}: unknown key {key!r}")
        if seen:
            raise LaunchConfError(f"{where}: duplicate key {key!r}")
    missing = [k for k in REQUIRED if k not in fields]
    if missing:
        raise LaunchConfError(f"{source}: missing required keys: {', '.join(missing)}")
    disks = tuple(Disk(e["id"], e["path"], e["readonly"] == "1") for e in _group(groups, "disk"))
    mounts = tuple(Mount(e["source"], e["target"], e["readonly"] == "1")
                   for e in _group(groups, "mount"))  # fmt: skip
    for m in mounts:
        # normpath keeps a leading "//" (POSIX lets it mean something else): refused too
        if m.target == "/" or not m.target.startswith("/") or m.target.startswith("//") or \
                m.target != posixpath.normpath(m.target):  # fmt: skip
            raise LaunchConfError(f"mount target {m.target!r} is not a normalised absolute "
                                  "guest path below /")  # fmt: skip
    for key, allowed in (("init_log", ("0", "1")), ("nested_virt", ("auto",))):
        if key in fields and fields[key] not in allowed:
            raise LaunchConfError(f"{key} is not {' or '.join(allowed)}: {fields[key]!r}")
    nix = [k for k in NIX_KEYS if k in fields]
    if nix and len(nix) != len(NIX_KEYS):
        raise LaunchConfError(f"{source}: {', '.join(NIX_KEYS)} go together; "
                              f"only {', '.join(nix)} given")  # fmt: skip
    return LaunchConf(
        task_rootfs=fields["task_rootfs"], ram_mib=_int(fields, "ram_mib"),
        vcpus=_int(fields, "vcpus"), workdir=fields["workdir"], exec_path=fields["exec_path"],
        argv=_indexed(indexed, "argv"), env=_indexed(indexed, "env"), disks=disks, mounts=mounts,
        init_log=fields.get("init_log") == "1", nested_virt="nested_virt" in fields,
        task_lock=fields.get("task_lock"),
        workspace_source=fields.get("workspace_source"),
        workspace_tag=fields.get("workspace_tag"),
        workspace_target=fields.get("workspace_target"),
        nix_overlay=NixOverlay(*(fields[k] for k in NIX_KEYS)) if nix else None,
    )  # fmt: skip


def read(path: Path) -> LaunchConf:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as err:
        raise LaunchConfError(f"cannot read {path}: {err}") from err
    return parse(text, os.fspath(path))
