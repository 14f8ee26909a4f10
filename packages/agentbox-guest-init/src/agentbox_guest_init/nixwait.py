"""Container mode's cold start: the task starts while the sidecar's nix-daemon is still
coming up, so the Nix client commands wait for its socket on first use.

With ``AGENTBOX_NIX_DAEMON_STARTING=1`` the guest init writes one small shell script and a link
to it per client command into a dir that goes first on PATH: root-owned under /run as root, in
the dev user's cache when it starts as that user (a Kubernetes pod's ``runAsUser``). Each link
waits (bounded) for the daemon's socket, then execs the real command found later on PATH. The
image is untouched; without the variable nothing is written.
"""

from __future__ import annotations

import os

from agentbox_guest_init.identity import DEV_HOME

WAIT_DIR = "/run/agentbox/nix-wait"
WAIT_BIN = f"{WAIT_DIR}/bin"
USER_WAIT_DIR = f"{DEV_HOME}/.cache/agentbox/nix-wait"  # when the guest init is not root
WAIT_SECONDS = 10
# the clients that talk to the daemon (nix-daemon itself is not one)
CLIENTS = ("nix", "nix-store", "nix-build", "nix-shell", "nix-env", "nix-instantiate",
           "nix-collect-garbage", "nix-channel", "nix-copy-closure", "nix-hash",
           "nix-prefetch-url")  # fmt: skip


def wrapper_script(socket: str, seconds: int = WAIT_SECONDS) -> str:
    """The script every link runs (pure): wait for ``socket``, then exec the real ``$0``."""
    tries = seconds * 10
    return f"""#!/bin/sh
# agentbox: the Nix daemon was starting when this sandbox started; wait for it, then run the
# real command (the first one later on PATH)
name=${{0##*/}}
if [ ! -S {socket} ]; then
  i=0
  while [ ! -S {socket} ]; do
    if [ "$i" -ge {tries} ]; then
      echo "agentbox: the Nix daemon did not open {socket} within {seconds} s, so $name cannot \
run; on the host, \\`agentbox container sidecar\\` starts the project's Nix sidecar without \
waiting and says where to look (podman logs)" >&2
      exit 1
    fi
    sleep 0.1
    i=$((i+1))
  done
fi
self=${{0%/*}}
rest=
IFS=:
for d in $PATH; do
  if [ -n "$rest" ] && [ -x "$d/$name" ] && [ ! -d "$d/$name" ]; then
    unset IFS
    exec "$d/$name" "$@"
  fi
  [ "$d" = "$self" ] && rest=1
done
echo "$name: command not found" >&2
exit 127
"""


OFF_MESSAGE = (
    "agentbox: this sandbox has no Nix daemon: under a network policy the project's daemon "
    "would fetch with the host's network, outside the policy. On the host, `agentbox container "
    "--nix-outside-policy` gives the sandbox that daemon anyway; `--net open` has no policy"
)


def off_script() -> str:
    """The script every link runs when the sandbox has no daemon (pure): say why, fail."""
    return f"""#!/bin/sh
# agentbox: no Nix daemon under this sandbox's network policy
echo "${{0##*/}}: {OFF_MESSAGE.replace("`", chr(92) + "`")}" >&2
exit 1
"""


def install(path: str, socket: str, root: str = "/", seconds: int = WAIT_SECONDS,
            wait_dir: str = WAIT_DIR, *, off: bool = False) -> str | None:  # fmt: skip
    """Write the script (``off``: the one that says there is no daemon) and its links into
    ``wait_dir`` for the clients found on ``path``; the dir to put first on PATH, or None when
    there is no client (nothing written)."""
    from agentbox_guest_init.sysctl import which

    found = [name for name in CLIENTS if which(name, path)]
    if not found:
        return None
    bin_dir = os.path.join(root, wait_dir.lstrip("/"), "bin")
    os.makedirs(bin_dir, mode=0o755, exist_ok=True)
    script = os.path.join(root, wait_dir.lstrip("/"), "wait-for-daemon")
    with open(script, "w", encoding="utf-8") as f:
        f.write(off_script() if off else wrapper_script(socket, seconds))
    os.chmod(script, 0o755)
    for name in found:
        link = os.path.join(bin_dir, name)
        if not os.path.lexists(link):
            os.symlink("../wait-for-daemon", link)
    return f"{wait_dir}/bin"
