"""Files the image carries besides packages: the Nix sidecar script and the Podman-backed
``podman`` / ``docker`` / ``docker-compose`` wrappers, and the guest init's freeze step."""

from __future__ import annotations

NIX_SIDECAR = """\
#!/bin/sh
# agentbox container mode: serve the merged /nix of the sidecar to task containers.
set -eu
mkdir -p /nix/store /nix/var/nix/db /nix/var/nix/daemon-socket /nix/var/nix/profiles
# The last sidecar's socket survives in the persistent /nix: a task that sees it would take the
# daemon for up and be refused. nix-daemon makes a new one.
rm -f /nix/var/nix/daemon-socket/socket
exec nix-daemon
"""

PODMAN_WRAPPER = """\
#!/bin/sh
# In a libkrun guest, rootless Podman storage is prepared in the background: wait for it.
if [ -e /run/agentbox/podman-prep.status ]; then
    /usr/bin/agentbox-guest-init libkrun podman wait || exit $?
fi
exec /usr/bin/podman "$@"
"""

DOCKER_WRAPPER = """\
#!/bin/sh
# docker is Podman: wait for the preparation and (re)start the Podman API socket first.
if [ -e /run/agentbox/podman-prep.status ]; then
    /usr/bin/agentbox-guest-init libkrun podman service-wait >/dev/null || exit $?
fi
exec /usr/bin/podman "$@"
"""

DOCKER_COMPOSE_WRAPPER = """\
#!/bin/sh
# docker-compose talks to the Podman API socket (DOCKER_HOST points at it).
if [ -e /run/agentbox/podman-prep.status ]; then
    /usr/bin/agentbox-guest-init libkrun podman service-wait >/dev/null || exit $?
fi
exec /usr/bin/docker-compose "$@"
"""

FREEZE_ENTRY = """\
import sys

from agentbox_guest_init.main import entry

sys.exit(entry())
"""

# Run inside the build container: freeze the guest init with the image's own Python (so the
# binary matches the image's libc), install it, drop the build tools.
FREEZE_SCRIPT = """\
set -eu
work=/tmp/agentbox-freeze
python3 -m venv "$work/venv"
PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    "$work/venv/bin/pip" install --quiet --disable-pip-version-check "pyinstaller==6.*"
cd "$work/src"
"$work/venv/bin/pyinstaller" --noconfirm --onedir --log-level WARN --name agentbox-guest-init \\
    --distpath /usr/lib --workpath "$work/build" --specpath "$work" \\
    --exclude-module inspect --exclude-module ctypes --paths "$work/src" entry.py
ln -sf /usr/lib/agentbox-guest-init/agentbox-guest-init /usr/bin/agentbox-guest-init
ln -sf /usr/lib/agentbox-guest-init/agentbox-guest-init /usr/bin/loftd-guest-init
rm -rf "$work"
/usr/bin/agentbox-guest-init --version
/usr/bin/loftd-guest-init --version
"""

FINISH_SCRIPT = """\
set -eu
getent group nixbld >/dev/null || groupadd --system nixbld
for i in 1 2 3 4; do
    id "nixbld$i" >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /var/empty \\
        --gid nixbld --groups nixbld --shell /usr/sbin/nologin "nixbld$i"
done
mkdir -p /nix/store /nix/var/nix/db /nix/var/nix/daemon-socket /nix/var/nix/profiles
chgrp nixbld /nix/store
chmod 1775 /nix/store
"""

# The workstation (trixie) -------------------------------------------------------------------

# The original's tmux settings: no mouse, `|` and `-` splits, Vim-style pane moves.
TMUX_CONF = """\
# agentbox: system-wide tmux settings
set -g mouse off
bind | split-window -h
bind - split-window -v
bind h select-pane -L
bind j select-pane -D
bind k select-pane -U
bind l select-pane -R
"""

STARSHIP_FISH = """\
# agentbox: starship is the prompt of interactive fish shells
if status is-interactive; and command -q starship
    starship init fish | source
end
"""

# mold through clang, for cargo's x86_64-unknown-linux-gnu linker (no RUSTFLAGS needed).
CLANG_MOLD_WRAPPER = """\
#!/bin/sh
exec /usr/bin/clang -fuse-ld=mold "$@"
"""

NIX_STORE_DB_CHECK = '''\
#!/usr/bin/python3
"""agentbox-nix-store-db-check: the /nix/store entries that are present on disk, against the
paths the Nix database knows as valid (nix path-info --all). A present but invalid path is
reported with nix-store --verify-path's own evidence. Diagnostic only: nothing is repaired or
changed. Exit status 0: every present path is valid; 1: some are not; 2: the check could not run.
"""
import os
import subprocess
import sys

STORE = os.environ.get("NIX_STORE_DIR", "/nix/store")
UPPER = os.environ.get("AGENTBOX_NIX_DISK_UPPER", "/run/agentbox/nix-disk/upper")


def present(store):
    for name in sorted(os.listdir(store)):
        if name == ".links" or name.endswith(".lock") or name.startswith("."):
            continue
        yield os.path.join(store, name)


def main():
    try:
        done = subprocess.run(["nix", "path-info", "--all"], capture_output=True, text=True)
    except OSError as err:
        print(f"agentbox-nix-store-db-check: cannot run nix: {err}", file=sys.stderr)
        return 2
    if done.returncode != 0:
        print("agentbox-nix-store-db-check: nix path-info --all failed: "
              + (done.stderr.strip() or f"exit status {done.returncode}"), file=sys.stderr)
        return 2
    valid = set(done.stdout.split())
    paths = list(present(STORE))
    invalid = [p for p in paths if p not in valid]
    print(f"{len(paths)} store paths present, {len(valid)} valid in the Nix database, "
          f"{len(invalid)} present but invalid")
    upper = os.path.isdir(UPPER)
    for path in invalid:
        print(f"invalid: {path}")
        check = subprocess.run(["nix-store", "--verify-path", path], capture_output=True,
                               text=True)
        said = (check.stdout + check.stderr).strip() or "no output"
        print(f"  nix-store --verify-path: exit status {check.returncode}: {said}")
        if upper:
            layer = os.path.join(UPPER, "store", os.path.basename(path))
            where = "present" if os.path.lexists(layer) else "not found"
            print(f"  store layer: {where} in {UPPER}/store (evidence, not proof of the cause)")
    if upper:
        for shadow in ("var/nix", "var/nix/db"):
            if os.path.isdir(os.path.join(UPPER, shadow)):
                print(f"context: {UPPER}/{shadow} exists (metadata shadow)")
    return 1 if invalid else 0


sys.exit(main())
'''

# (path in the image, text, mode)
WORKSTATION_FILES = (
    ("/etc/tmux.conf", TMUX_CONF, 0o644),
    ("/etc/fish/conf.d/agentbox-starship.fish", STARSHIP_FISH, 0o644),
    ("/usr/local/bin/clang_mold_wrapper", CLANG_MOLD_WRAPPER, 0o755),
    ("/usr/local/bin/agentbox-nix-store-db-check", NIX_STORE_DB_CHECK, 0o755),
)

# Debian names fd `fdfind`; Nix gets its commands and flakes without flags.
WORKSTATION_SCRIPT = """\
set -eu
ln -sf /usr/bin/fdfind /usr/local/bin/fd
mkdir -p /etc/nix
touch /etc/nix/nix.conf
grep -q '^experimental-features' /etc/nix/nix.conf \\
    || echo 'experimental-features = nix-command flakes' >> /etc/nix/nix.conf
test -x /usr/bin/python && test -x /bin/python3 && test -x /usr/bin/env
"""
