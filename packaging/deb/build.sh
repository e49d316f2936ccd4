#!/usr/bin/env bash
# Builds seglog's Debian packages with dpkg-deb alone (no cargo-deb; packaging/README.md):
#
#   packaging/deb/build.sh                          # seglog: the device binary, units, users
#   packaging/deb/build.sh --package seglog-server  # seglog-server: the full build, collector
#
# Options:
#   --package NAME    seglog (default) or seglog-server
#   --bin PATH        package this binary instead of building it (tests pass their own)
#   --docs DIR        use man pages and completions already generated there by
#                     `cargo run --example gen-docs -- DIR NAME` instead of generating them
#   --out DIR         where the .deb goes (default: target/deb)
#   --compression X   dpkg-deb's -Z: xz (default), gzip, zstd or none
#
# Prints the path of the .deb on its last line. Exit status 0 on success, 2 when an argument
# or an input file is wrong (with a message that says which), else the failing command's.
set -euo pipefail
# Modes in the package must not depend on the caller's umask (install -D makes directories).
umask 022

die() {
    echo "build.sh: error: $*" >&2
    exit 2
}

root=$(cd "$(dirname "$0")/../.." && pwd)
package=seglog
bin=""
docs=""
out="$root/target/deb"
compression=xz
while [ $# -gt 0 ]; do
    case "$1" in
    --package) package=${2:?--package needs a name}; shift 2 ;;
    --bin) bin=${2:?--bin needs a path}; shift 2 ;;
    --docs) docs=${2:?--docs needs a directory}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --compression) compression=${2:?--compression needs a type}; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

case "$package" in
seglog) program=seglog; features=(--no-default-features) ;;
seglog-server) program=seglog-server; features=() ;;
*) die "unknown package '$package': seglog or seglog-server" ;;
esac
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (package dpkg)"
command -v dpkg >/dev/null || die "dpkg not found (package dpkg)"

dist="$root/dist"
[ -f "$dist/seglog.toml" ] ||
    die "$dist/seglog.toml (the defaults file, installed as /usr/share/defaults/seglog/seglog.toml) is missing"

# The binary: the device build for seglog, the full (default) build for seglog-server.
if [ -z "$bin" ]; then
    if [ "$package" = seglog ]; then
        (cd "$root" && cargo build --profile device -p seglog --no-default-features) >&2
        bin="$root/target/device/seglog"
    else
        (cd "$root" && cargo build --release -p seglog) >&2
        bin="$root/target/release/seglog"
    fi
fi
[ -x "$bin" ] || die "binary $bin does not exist or is not executable"

# Man pages and completions from the clap definition of the same feature set.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "$docs" ]; then
    docs="$tmp/docs"
    (cd "$root" && cargo run --quiet "${features[@]}" --example gen-docs -- "$docs" "$program") >&2
fi
[ -f "$docs/man/$program.1" ] || die "no $docs/man/$program.1: generate with gen-docs (see --help)"

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
[ -n "$version" ] || die "no version in [workspace.package] of $root/Cargo.toml"
arch=$(dpkg --print-architecture)
# The newest glibc symbol version the binary needs; libgcc_s for unwinding (panic=unwind).
glibc=$(grep -aoE 'GLIBC_2\.[0-9]+' "$bin" | sort -t. -k2,2n -u | tail -n 1 | sed 's/GLIBC_//')
depends="libc6${glibc:+ (>= $glibc)}"
if grep -aq 'libgcc_s\.so\.1' "$bin"; then depends="$depends, libgcc-s1"; fi

stage="$tmp/$package"
mkdir -p "$stage/DEBIAN"
put() { # put MODE SOURCE DEST (DEST relative to the package root)
    install -D -m "$1" "$2" "$stage/$3"
}
doc="usr/share/doc/$package"

put 0755 "$bin" "usr/bin/$program"
# No debug info in the package (the release profile keeps line tables; the device profile
# strips already, a no-op then).
if command -v strip >/dev/null; then
    strip --strip-debug "$stage/usr/bin/$program"
else
    echo "build.sh: warning: strip not found (package binutils): debug info stays in the binary" >&2
fi
for page in "$docs"/man/*.1; do
    put 0644 "$page" "usr/share/man/man1/$(basename "$page")"
    gzip -9n "$stage/usr/share/man/man1/$(basename "$page")"
done
put 0644 "$docs/completions/$program.bash" "usr/share/bash-completion/completions/$program"
put 0644 "$docs/completions/_$program" "usr/share/zsh/vendor-completions/_$program"
put 0644 "$docs/completions/$program.fish" "usr/share/fish/vendor_completions.d/$program.fish"
put 0644 "$root/packaging/deb/copyright" "$doc/copyright"

if [ "$package" = seglog ]; then
    for unit in seglog-upload.service seglog-upload-once.service seglog-upload-once.timer; do
        put 0644 "$dist/$unit" "usr/lib/systemd/system/$unit"
    done
    put 0644 "$dist/sysusers.d/seglog.conf" usr/lib/sysusers.d/seglog.conf
    put 0644 "$dist/tmpfiles.d/seglog.conf" usr/lib/tmpfiles.d/seglog.conf
    put 0644 "$dist/seglog.toml" usr/share/defaults/seglog/seglog.toml
    put 0644 "$dist/etc/seglog/seglog.toml" etc/seglog/seglog.toml
    put 0644 "$dist/seglog-upload.cron" "$doc/examples/seglog-upload.cron"
    put 0644 "$root/README.md" "$doc/README.md"
    put 0644 "$dist/README.md" "$doc/README.systemd.md"
    echo /etc/seglog/seglog.toml >"$stage/DEBIAN/conffiles"
    summary="on-device telemetry buffer: recorder, journal and uploader"
    description=" seglog appends telemetry records to a crash-safe, multi-process segmented log
 under /var/lib/seglog (group seglog), inspects it offline (seglog journal) and
 uploads it to a collector when policy allows (seglog-upload.service or
 seglog-upload-once.timer, not enabled by default). This is the device build:
 it has no collector (see seglog-server)."
else
    put 0644 "$dist/seglog-collector.service" usr/lib/systemd/system/seglog-collector.service
    put 0644 "$dist/sysusers.d/seglog-collector.conf" usr/lib/sysusers.d/seglog-collector.conf
    put 0644 "$root/collector/README.md" "$doc/README.md"
    put 0644 "$dist/README.md" "$doc/README.systemd.md"
    summary="seglog reference collector (full seglog build as seglog-server)"
    description=" The full seglog build, installed as /usr/bin/seglog-server: the reference
 collector that receives seglog uploads (seglog-server collector serve, run by
 seglog-collector.service as the seglog-collector user; not enabled by default)
 and every device command. It does not conflict with the seglog package."
fi
for script in postinst prerm postrm; do
    put 0755 "$root/packaging/deb/$package/$script" "DEBIAN/$script"
done

installed_kib=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: $package
Version: $version
Architecture: $arch
Maintainer: seglog maintainers <seglog@example.invalid>
Installed-Size: $installed_kib
Depends: $depends
Section: admin
Priority: optional
Homepage: https://example.invalid/seglog
Description: $summary
$description
EOF

mkdir -p "$out"
deb="$out/${package}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"$compression" --build "$stage" "$deb" >&2
echo "$deb"
