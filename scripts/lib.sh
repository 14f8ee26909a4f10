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
