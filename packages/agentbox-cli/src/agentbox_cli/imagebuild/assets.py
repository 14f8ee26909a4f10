"""Files the image carries besides packages: the Nix sidecar script and the Podman-backed
``podman`` / ``docker`` / ``docker-compose`` wrappers, and the guest init's freeze step."""

from __future__ import annotations

NIX_SIDECAR = """\
#!/bin/sh
# agentbox container mode: serve the merged /nix of the sidecar to task containers.
set -eu
mkdir -p /nix/store /nix/var/nix/db /nix/var/nix/daemon-socket /nix/var/nix/profiles
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
