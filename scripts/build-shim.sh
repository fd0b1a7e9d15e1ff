#!/usr/bin/env bash
# Builds berth-shim as shipped: statically linked (no dynamic loader, only the libc code it
# uses), not position-independent (no relocated pointers to keep dirty), with the `shim` cargo
# profile, and with its hot code and data placed together in the order of
# shim/hot-symbols.txt. Writes <target>/shim/berth-shim and, unless INSTALL=0, copies it next to
# the release berthd (<target>/release/berth-shim), where berthd looks for its shim.
#
# Why a script and not plain `cargo build`: these are flags for the final link of one binary,
# and cargo has no per-binary switch for them on stable (RUSTFLAGS would reach every crate and
# binary, and berthd needs glibc's dynamic resolver). The debug build (`cargo build`) stays a
# normal dynamic executable; both are the same code.
#
# Environment: NO_ORDER=1 links without the ordering, ORDER_FILE=F uses another list (both for
# scripts/shim-order.sh), INSTALL=0 leaves <target>/release alone.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

# libseccomp from its archive: a static binary cannot load libseccomp.so.
libdir=$(dirname "$(gcc -print-file-name=libseccomp.a)")
[ -f "$libdir/libseccomp.a" ] || {
    echo "build-shim: libseccomp.a not found (Debian: apt-get install libseccomp-dev)" >&2
    exit 1
}
export LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=$libdir

target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
out=$target_dir/shim/berth-shim
order=${ORDER_FILE:-$repo_root/shim/hot-symbols.txt}
# Segments start on 64 KiB boundaries: the kernel maps a file's pages around a fault in 64 KiB
# windows aligned to the address, and a text segment that starts a page or two past one (as
# .rodata grows) spreads the hot code below over one window more.
flags=(-C target-feature=+crt-static -C relocation-model=static
    -C link-arg=-Wl,-z,max-page-size=65536)
if [ "${NO_ORDER:-0}" != 1 ]; then
    # Named by content, so a new list changes the arguments and cargo relinks.
    mkdir -p "$target_dir/shim"
    copy=$target_dir/shim/order-$(sha256sum "$order" | cut -c1-16).txt
    cp "$order" "$copy"
    # lld (rustc's default linker on x86_64 Linux) places these sections first, in this order.
    flags+=(-C "link-arg=-Wl,--symbol-ordering-file=$copy" -C "link-arg=-Wl,--no-warn-symbol-ordering")
fi
cargo rustc --profile shim -q -p berth-shim --bin berth-shim -- "${flags[@]}"
if [ "${NO_ORDER:-0}" != 1 ]; then
    # Names change with dependency or toolchain updates; say so rather than silently lose
    # the ordering.
    found=$(comm -12 <(grep -v '^#' "$order" | sort -u) <(nm --defined-only "$out" | awk '{print $3}' | sort -u) | wc -l)
    listed=$(grep -vc '^#' "$order")
    echo "build-shim: $found of $listed hot symbols found (scripts/shim-order.sh refreshes the list)" >&2
fi
if [ "${INSTALL:-1}" != 0 ]; then
    mkdir -p "$target_dir/release"
    # A new file rather than an overwrite: running shims execute the old one.
    cp --remove-destination "$out" "$target_dir/release/berth-shim"
fi
