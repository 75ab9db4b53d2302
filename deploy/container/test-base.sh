#!/bin/sh
# Builds a local stand-in for NODE_IMAGE from THIS machine's files, for testing the Containerfile
# where no image registry is reachable (tools/deploy/load/container.spec.ts): Debian's static
# busybox as the shell and tools, the host's node binary with its shared libraries, npm and
# the CA certificates. Not for production: use an official Node.js image there.
#   deploy/container/test-base.sh IMAGE_NAME [BUILDAH_GLOBAL_OPTIONS…]
set -eu
name=$1; shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/usr/bin" "$root/usr/local/bin" "$root/usr/lib" "$root/etc/ssl/certs" "$root/tmp" "$root/root"
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
ln -s ../../bin/busybox "$root/usr/bin/env"
node=$(command -v node)
cp "$node" "$root/usr/bin/node"
for lib in $(ldd "$node" | awk '/=>/ { print $3 } /ld-linux/ { print $1 }'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# Libraries native addons of the build need beyond node's own (nx's binding: librt, libutil).
libdir=$(dirname "$(ldd "$node" | awk '/libc.so/ { print $3 }')")
for lib in librt.so.1 libutil.so.1 libresolv.so.2; do
  [ -e "$libdir/$lib" ] && cp -L "$libdir/$lib" "$root$libdir/$lib"
done
npm_root=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
cp -r "$npm_root" "$root/usr/lib/npm"
ln -s ../lib/npm/bin/npm-cli.js "$root/usr/bin/npm"
ln -s ../lib/npm/bin/npx-cli.js "$root/usr/bin/npx"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
printf 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/bin:/usr/bin:/bin NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt\nCMD ["/bin/sh"]\n' > "$work/Containerfile"
buildah "$@" bud --isolation chroot --layers=false -t "$name" -f "$work/Containerfile" "$work" >/dev/null
