#!/usr/bin/env bash
# Writes a one-layer busybox-static image as an OCI archive (what `ctr images import` reads),
# named by the io.containerd.image.name annotation: make-busybox-image.sh OUT.tar NAME
# No registry and no network: the layer is the host's /bin/busybox with a few applet links.
set -euo pipefail
out=$1
name=$2
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/oci/blobs/sha256"
cp /bin/busybox "$work/rootfs/bin/busybox"
for a in sh echo hostname cat sleep true ls; do ln -s busybox "$work/rootfs/bin/$a"; done
tar -C "$work/rootfs" -cf "$work/layer.tar" .
blob() {
    local d
    d=$(sha256sum "$1" | cut -d' ' -f1)
    mv "$1" "$work/oci/blobs/sha256/$d"
    echo "$d $(stat -c %s "$work/oci/blobs/sha256/$d")"
}
read -r ld ls < <(blob "$work/layer.tar")
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$ld" >"$work/config"
read -r cd cs < <(blob "$work/config")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$cd" "$cs" "$ld" "$ls" >"$work/manifest"
read -r md ms < <(blob "$work/manifest")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s"}}]}' \
    "$md" "$ms" "$name" >"$work/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/oci/oci-layout"
tar -C "$work/oci" -cf "$out" .
