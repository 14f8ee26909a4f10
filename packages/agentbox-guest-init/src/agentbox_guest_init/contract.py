"""The host -> guest contract: environment variables the host sets, parsed strictly.

Two spellings of one contract: ``AGENTBOX_*`` (agentbox-guest-init) and ``LOFTD_*``
(loftd-guest-init). A malformed value is a ``ContractError`` with a one-line reason; nothing is
guessed. No dataclasses here: this runs on every guest start (see the package README).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

EXIT_USAGE = 2
EXIT_CONTRACT = 3
EXIT_SETUP = 4
# under an allow-list, where the guest init's relay to the host's egress proxy listens (the
# host sets the proxy variables to it; see egress.py)
EGRESS_LISTEN = ("127.0.0.1", 3128)
EGRESS_PROXY_URL = f"http://{EGRESS_LISTEN[0]}:{EGRESS_LISTEN[1]}"


class GuestError(Exception):
    """A failure the guest init reports in one line and exits with ``code``."""

    code = EXIT_SETUP

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code


class ContractError(GuestError):
    code = EXIT_CONTRACT


# contract field -> variable suffix (the prefix is AGENTBOX_ or LOFTD_)
FLAGS = {
    "enter_as_root": "ENTER_AS_ROOT",
    "nix_overlay": "LIBKRUN_NIX_OVERLAY",
    "containers_storage": "LIBKRUN_CONTAINERS_STORAGE",
    "use_passt": "LIBKRUN_USE_PASST",
    "kvm_drop_to_dev": "KVM_DROP_TO_DEV",
    "profile": "GUEST_PROFILE",
    "debug": "GUEST_DEBUG",
    # container mode: the sidecar's nix-daemon may not be up yet (its clients wait for it)
    "nix_daemon_starting": "NIX_DAEMON_STARTING",
    # container mode under a network policy: no daemon at all (its clients say why)
    "nix_daemon_off": "NIX_DAEMON_OFF",
}
LOFTD_FLAGS = {
    "enter_as_root": "ENTER_AS_ROOT",
    "nix_overlay": "NIX_OVERLAY",
    "nix_host_overlay": "NIX_HOST_OVERLAY",  # the host mounted /nix (loftd's default)
    "containers_storage": "CONTAINERS_STORAGE",
    "use_passt": "USE_PASST",
    "kvm_drop_to_dev": "KVM_DROP_TO_DEV",
    "profile": "GUEST_PROFILE",
    "debug": "GUEST_DEBUG",
}
TEXT = {
    "nix_disk_id": ("LIBKRUN_NIX_DISK_ID", "agentbox-nix"),
    "nix_disk_label": ("LIBKRUN_NIX_DISK_LABEL", "AGENTBOX_NIX"),
    "containers_disk_id": ("LIBKRUN_CONTAINERS_DISK_ID", "agentbox-containers"),
    "containers_disk_label": ("LIBKRUN_CONTAINERS_DISK_LABEL", "AGENTBOX_CONTAINERS"),
    "workspace_tag": ("MICROVM_WORKSPACE_TAG", ""),
    "workspace_target": ("MICROVM_WORKSPACE_TARGET", "/workspace"),
    # microvm: more virtiofs shares to mount after the workspace (an agent's git dir), a JSON
    # list of [tag, absolute target, read-only]; read by ``shares``
    "shares_json": ("MICROVM_SHARES", ""),
    # the VM modes: where the guest init reports that it started and how the command ended,
    # inside the task root the host reads after the VM is gone (see report.py)
    "status_file": ("GUEST_STATUS_FILE", ""),
    # container mode under an allow-list: the host's egress proxy socket (see egress.py)
    "egress_socket": ("EGRESS_SOCKET", ""),
}
LOFTD_TEXT = {
    "nix_disk_id": ("NIX_DISK_ID", "loftd-nix"),
    "nix_disk_label": ("NIX_DISK_LABEL", "LOFTD_NIX"),
    "containers_disk_id": ("CONTAINERS_DISK_ID", "loftd-containers"),
    "containers_disk_label": ("CONTAINERS_DISK_LABEL", "LOFTD_CONTAINERS"),
    "workspace_tag": ("WORKSPACE_TAG", ""),
    "workspace_target": ("WORKSPACE_TARGET", "/workspace"),
    "shares_json": ("SHARES", ""),
    "status_file": ("GUEST_STATUS_FILE", ""),
    "egress_socket": ("EGRESS_SOCKET", ""),
}


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name)
    if value is None or value == "0":
        return False
    if value == "1":
        return True
    raise ContractError(f"{name}={value!r} is not 1 or 0")


def _id(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None:
        return None
    if not value.isdigit() or not value.isascii() or int(value) >= 2**32 - 1:
        raise ContractError(f"{name}={value!r} is not a numeric id")
    return int(value)


def _shares(name: str, value: str) -> tuple[tuple[str, str, bool], ...]:
    """``[[tag, target, readonly], ...]``: tags unique and non-empty, targets absolute."""
    if not value:
        return ()
    import json

    try:
        items = json.loads(value)
    except ValueError:
        raise ContractError(f"{name} is not JSON: {value!r}") from None
    ok = isinstance(items, list) and all(
        isinstance(i, list) and len(i) == 3 and isinstance(i[0], str) and i[0]
        and isinstance(i[1], str) and i[1].startswith("/") and isinstance(i[2], bool)
        for i in items
    )  # fmt: skip
    if not ok or len({i[0] for i in items}) != len(items):
        raise ContractError(f"{name}={value!r} is not a list of [tag, absolute target, "
                            "true|false] with unique tags")  # fmt: skip
    return tuple((str(i[0]), str(i[1]), bool(i[2])) for i in items)


class Contract:
    """What the host asked for. Built only by ``parse``."""

    __slots__ = (
        "containers_disk_id", "containers_disk_label", "containers_storage", "debug",
        "egress_socket", "enter_as_root", "host_gid", "host_uid", "kvm_drop_to_dev",
        "nix_daemon_off", "nix_daemon_starting", "nix_disk_id", "nix_disk_label",
        "nix_host_overlay", "nix_overlay", "prefix", "profile", "shares", "shares_json",
        "status_file", "use_passt", "workspace_tag", "workspace_target",
    )  # fmt: skip

    prefix: str
    host_uid: int | None
    host_gid: int | None
    enter_as_root: bool
    nix_overlay: bool
    nix_host_overlay: bool
    nix_daemon_starting: bool
    nix_daemon_off: bool
    containers_storage: bool
    use_passt: bool
    kvm_drop_to_dev: bool
    profile: bool
    debug: bool
    nix_disk_id: str
    nix_disk_label: str
    containers_disk_id: str
    containers_disk_label: str
    workspace_tag: str
    workspace_target: str
    shares_json: str
    shares: tuple[tuple[str, str, bool], ...]  # (tag, target, read-only), from shares_json
    status_file: str
    egress_socket: str

    @property
    def libkrun(self) -> bool:
        """The host attached persistent disks: the libkrun/microvm path."""
        return self.nix_overlay or self.nix_host_overlay or self.containers_storage

    def var(self, suffix: str) -> str:
        return self.prefix + suffix


def parse(env: Mapping[str, str], prefix: str = "AGENTBOX_") -> Contract:
    """The contract in ``env``; ``ContractError`` names the first bad variable."""
    flags, text = (LOFTD_FLAGS, LOFTD_TEXT) if prefix == "LOFTD_" else (FLAGS, TEXT)
    c = Contract()
    c.prefix = prefix
    c.host_uid = _id(env, prefix + "HOST_UID")
    c.host_gid = _id(env, prefix + "HOST_GID")
    c.nix_host_overlay = False  # only loftd's contract has it
    c.nix_daemon_starting = c.nix_daemon_off = False  # only agentbox's has them
    for field, suffix in flags.items():
        setattr(c, field, _flag(env, prefix + suffix))
    for field, (suffix, default) in text.items():
        value = env.get(prefix + suffix, default)
        if "\0" in value or "\n" in value:
            raise ContractError(f"{prefix + suffix} contains a control character")
        setattr(c, field, value)
    if not c.workspace_target.startswith("/"):
        raise ContractError(
            f"{prefix}{text['workspace_target'][0]}={c.workspace_target!r} is not an absolute path"
        )
    c.shares = _shares(prefix + text["shares_json"][0], c.shares_json)
    for field in ("status_file", "egress_socket"):
        value = getattr(c, field)
        if value and not value.startswith("/"):
            raise ContractError(f"{prefix}{text[field][0]}={value!r} is not an absolute path")
    return c


def contract_vars(prefix: str = "AGENTBOX_") -> list[str]:
    """Every variable of the contract (the host's side checks it sets only these)."""
    flags, text = (LOFTD_FLAGS, LOFTD_TEXT) if prefix == "LOFTD_" else (FLAGS, TEXT)
    names = [prefix + "HOST_UID", prefix + "HOST_GID"]
    names += [prefix + s for s in flags.values()]
    names += [prefix + s for s, _ in text.values()]
    return names
