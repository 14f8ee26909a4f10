# Shared by scripts/install and scripts/test. Source it; do not run it.

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "agentbox: need root for: $*" >&2
        echo "hint: run this script as root or install sudo" >&2
        return 1
    fi
}

# apt_install PKG...: install the Debian/Ubuntu packages that are not installed yet.
apt_install() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "agentbox: missing packages: ${missing[*]}, and this is not a Debian/Ubuntu system" >&2
        echo "hint: install them with your package manager, then run this again" >&2
        return 1
    fi
    echo "agentbox: installing ${missing[*]}" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# The system interpreter: venvs made from it are usable by every user (pyenv's under /root is
# not), and it is what a fresh Debian 12 / Ubuntu machine has.
system_python() {
    local py
    for py in /usr/bin/python3 python3; do
        if command -v "$py" >/dev/null 2>&1 \
            && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$py"
            return 0
        fi
    done
    echo "agentbox: needs Python >= 3.11 (Debian 12 or Ubuntu 24.04 ship it as python3)" >&2
    return 1
}

PACKAGES_BOTTOM_UP=(agentbox-state agentbox-guest-init agentbox-storage agentbox-podman agentbox-krun loftd agentbox-cli)

# rootless_overlay_storage: for a user whose rootless Podman has no storage yet (no storage.conf
# of theirs, no graph root or an empty one) on a kernel that mounts overlay in a user namespace,
# write [storage] driver = "overlay" so that Podman does not fall back to vfs (which copies the
# whole image for every container). Existing storage is never changed: switching it needs
# `podman system reset`, which deletes it (agentbox warns about vfs instead).
rootless_overlay_storage() {
    [ "$(id -u)" -ne 0 ] || return 0
    local conf=${XDG_CONFIG_HOME:-$HOME/.config}/containers/storage.conf
    local graphroot=${XDG_DATA_HOME:-$HOME/.local/share}/containers/storage
    [ ! -e "$conf" ] || return 0
    if [ -d "$graphroot" ] && [ -n "$(ls -A "$graphroot" 2>/dev/null)" ]; then
        return 0
    fi
    # probed on the filesystem the graph root will be on, as Podman mounts it (userxattr)
    local data=${XDG_DATA_HOME:-$HOME/.local/share} probe ok=no
    mkdir -p "$data"
    probe=$(mktemp -d "$data/.agentbox-overlay-probe.XXXXXX")
    mkdir "$probe/l" "$probe/u" "$probe/w" "$probe/m"
    if unshare --user --map-root-user --mount sh -c "mount -t overlay overlay -o \
        userxattr,lowerdir=$probe/l,upperdir=$probe/u,workdir=$probe/w $probe/m" 2>/dev/null; then
        ok=yes
    fi
    rm -rf "$probe"
    if [ "$ok" != yes ]; then
        echo "agentbox: this kernel cannot mount overlay in a user namespace; Podman will use vfs" >&2
        return 0
    fi
    mkdir -p "$(dirname "$conf")"
    printf '[storage]\ndriver = "overlay"\n' >"$conf"
    echo "agentbox: your Podman had no storage yet: wrote driver = \"overlay\" to $conf" \
        "(rootless overlay; vfs would copy the whole image for every container)" >&2
}

# debootstrap_plan PLAN: "SUITE MIRROR BASE_TAR" when `agentbox --dry-run image build` (PLAN)
# still has to make its Debian base with debootstrap; nothing when the base is cached or given.
debootstrap_plan() {
    local base line
    base=$(printf '%s\n' "$1" | sed -n 's/^base \(.*\) (from debootstrap)$/\1/p')
    line=$(printf '%s\n' "$1" | sed -n "s/^  run debootstrap --variant=minbase \([^ ]*\) '<dir>' \([^ ]*\)$/\1 \2/p")
    [ -n "$base" ] && [ -n "$line" ] || return 0
    printf '%s %s\n' "$line" "$base"
}
