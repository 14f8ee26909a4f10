#!/bin/sh
# tiny-image.sh NAME [MARKER]: a tiny image shaped like the agentbox image (both guest
# inits, one file under two names, and a /nix), committed by Buildah as NAME. MARKER is the
# content of /nix/store/0000-image/marker (default from-image). Used by the microvm tests
# and bench/microvm.py.
set -eu
root=$(mktemp -d)
mkdir -p "$root/usr/bin" "$root/etc" "$root/nix/store/0000-image" "$root/nix/var/nix"
ln -s usr/bin "$root/bin"
echo ID=tiny > "$root/etc/os-release"
printf '#!/bin/sh\necho guest\n' > "$root/usr/bin/agentbox-guest-init"
chmod 755 "$root/usr/bin/agentbox-guest-init"
ln -s agentbox-guest-init "$root/usr/bin/loftd-guest-init"
echo "${2:-from-image}" > "$root/nix/store/0000-image/marker"
c=$(buildah from scratch)
buildah copy --quiet "$c" "$root" / >/dev/null
buildah commit --quiet --rm "$c" "$1" >/dev/null
rm -rf "$root"
