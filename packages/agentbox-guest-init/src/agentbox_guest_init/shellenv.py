"""The environment the user's command gets (pure)."""

from __future__ import annotations

from agentbox_guest_init.identity import DEV, DEV_HOME

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IDMAP_BIN = "/run/agentbox/idmap-bin"
NIX_SOCKET = "/nix/var/nix/daemon-socket/socket"
# Contract and profiling variables never reach the user's command.
PRIVATE_PREFIXES = ("AGENTBOX_", "LOFTD_", "_AGENTBOX_")


def without_bundle(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` as it was before PyInstaller's bootloader started the frozen guest init (pure):
    it prepends its private library dir to LD_LIBRARY_PATH (saving the original in
    LD_LIBRARY_PATH_ORIG) and sets _PYI_* variables for itself. Left in place, every program of
    the sandbox would load libz, libcrypto, ... from the guest init's bundle."""
    out = {k: v for k, v in env.items() if not k.startswith("_PYI_") and k != "_MEIPASS2"}
    original = out.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is not None:
        out["LD_LIBRARY_PATH"] = original
    else:
        out.pop("LD_LIBRARY_PATH", None)
    return out


def shell_env(
    inherited: Mapping[str, str],
    *,
    uid: int,
    as_root: bool,
    shell: str,
    containers_storage: bool,
    nix_daemon: bool,
) -> dict[str, str]:
    """What to export, from what the guest init inherited."""
    env = {k: v for k, v in inherited.items() if not k.startswith(PRIVATE_PREFIXES)}
    home = "/root" if as_root else DEV_HOME
    user = "root" if as_root else DEV
    path = env.get("PATH") or BASE_PATH
    if "/nix/var/nix/profiles/default/bin" not in path:
        path = f"{path}:/nix/var/nix/profiles/default/bin"
    runtime = f"/run/user/{0 if as_root else uid}"
    env.update(
        USER=user,
        LOGNAME=user,
        HOME=home,
        SHELL=shell,
        XDG_CONFIG_HOME=f"{home}/.config",
        XDG_DATA_HOME=f"{home}/.local/share",
        XDG_STATE_HOME=f"{home}/.local/state",
        XDG_CACHE_HOME=f"{home}/.cache",
        XDG_RUNTIME_DIR=runtime,
        TMPDIR=f"{home}/.cache/tmp",
        SCCACHE_DIR=f"{DEV_HOME}/.cache/sccache",
        PATH=path,
    )
    if containers_storage:
        env["PATH"] = f"{IDMAP_BIN}:{env['PATH']}"
        env["DOCKER_HOST"] = f"unix://{runtime}/podman/podman.sock"
    if nix_daemon:
        env["NIX_REMOTE"] = f"unix://{NIX_SOCKET}"
    return env
