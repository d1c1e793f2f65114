#!/usr/bin/env bash
# Fetches the BTF of Debian 12's kernel 6.1 (the newest
# linux-image-6.1.0-*-amd64-unsigned that apt knows) into
# .cache/btf/debian-6.1.btf, for the tracer's TestCORECompat: the probe's
# CO-RE relocations are checked against it on any kernel.
#
# The package ships only a compressed vmlinuz; the BTF is the .BTF section
# of the vmlinux inside it. Needs apt-get, dpkg-deb, objcopy and the
# decompressor of the image (xz on Debian's 6.1; zstd and gzip handled too).
# Run again with --force to replace an existing file.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out_dir="$root/.cache/btf"
out="$out_dir/debian-6.1.btf"
info="$out_dir/debian-6.1.txt"

if [ -s "$out" ] && [ "${1:-}" != "--force" ]; then
  echo "btf: $out present ($(head -n1 "$info" 2>/dev/null || echo "unknown package"))"
  exit 0
fi

newest() {
  apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' |
    awk '{print $1}' | sort -V | tail -n1
}
pkg=$(newest)
if [ -z "$pkg" ]; then
  apt-get update -q >/dev/null || true # not root: the message below says what is missing
  pkg=$(newest)
fi
if [ -z "$pkg" ]; then
  echo "btf: apt knows no linux-image-6.1.0-*-amd64-unsigned (needs Debian 12 bookworm sources)" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "btf: downloading $pkg"
# Root's apt drops to user _apt, which cannot write into our temp dir.
(cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null)
deb=$(ls "$tmp"/*.deb)
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*'
vmlinuz=$(ls "$tmp"/boot/vmlinuz-*)

# vmlinuz is a boot stub followed by the compressed kernel: try each place
# where a known compressed stream starts until one yields an ELF. The
# decompressors stop at the end of the stream and complain about the bytes
# after it, hence their exit status is not looked at: the ELF check decides.
found=
for fmt in xz zstd gzip; do
  case $fmt in
    xz) magic='\xfd7zXZ\x00'; cmd=(xz -dcq) ;;
    zstd) magic='\x28\xb5\x2f\xfd'; cmd=(zstd -dcq) ;;
    gzip) magic='\x1f\x8b\x08'; cmd=(gzip -dcq) ;;
  esac
  command -v "${cmd[0]}" >/dev/null || continue
  for off in $(LC_ALL=C grep -obUaP "$magic" "$vmlinuz" | cut -d: -f1); do
    tail -c +$((off + 1)) "$vmlinuz" | "${cmd[@]}" >"$tmp/vmlinux" 2>/dev/null || true
    if [ "$(head -c4 "$tmp/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
      found=$fmt
      break 2
    fi
  done
done
if [ -z "$found" ]; then
  echo "btf: no ELF kernel found in $(basename "$vmlinuz") (tried xz, zstd, gzip)" >&2
  exit 1
fi

objcopy -O binary --only-section=.BTF "$tmp/vmlinux" "$tmp/btf"
# Raw BTF starts with the little-endian magic 0xeb9f.
if [ ! -s "$tmp/btf" ] || [ "$(head -c2 "$tmp/btf" | od -An -tx1 | tr -d ' ')" != 9feb ]; then
  echo "btf: $(basename "$vmlinuz") has no .BTF section" >&2
  exit 1
fi
mkdir -p "$out_dir"
version=$(dpkg-deb -f "$deb" Version)
printf '%s %s\n%s\n' "$pkg" "$version" "$(sha256sum "$tmp/btf" | cut -d' ' -f1)" >"$tmp/info"
mv "$tmp/btf" "$out"
mv "$tmp/info" "$info"
echo "btf: $out from $pkg $version ($found)"
