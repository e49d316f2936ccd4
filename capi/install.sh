#!/usr/bin/env bash
# Installs the C API into PREFIX: lib/libseglog.so.0 (the soname) with the libseglog.so
# development symlink, lib/libseglog.a, include/seglog.h and lib/pkgconfig/seglog.pc.
#
#   capi/install.sh PREFIX [LIBDIR]
#
# LIBDIR holds the built libraries (default: target/release, after
# `cargo build --release -p capi`). Then: cc probe.c $(pkg-config --cflags --libs seglog)
# with PKG_CONFIG_PATH=PREFIX/lib/pkgconfig.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prefix="${1:?usage: capi/install.sh PREFIX [LIBDIR]}"
libdir="${2:-$here/../target/release}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/../Cargo.toml" | head -1)"
for f in libseglog.so libseglog.a; do
    [ -f "$libdir/$f" ] || { echo "capi/install.sh: $libdir/$f not found: run cargo build --release -p capi first" >&2; exit 2; }
done
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
install -m 0755 "$libdir/libseglog.so" "$prefix/lib/libseglog.so.0"
ln -sf libseglog.so.0 "$prefix/lib/libseglog.so"
install -m 0644 "$libdir/libseglog.a" "$prefix/lib/libseglog.a"
install -m 0644 "$here/include/seglog.h" "$prefix/include/seglog.h"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" "$here/seglog.pc.in" \
    > "$prefix/lib/pkgconfig/seglog.pc"
echo "installed libseglog $version into $prefix"
