#!/usr/bin/env bash
# arm64_sysroot.sh [DEST] -- an arm64 CPython 3.11 with numpy and the runtime's engines (ai-edge-litert,
# onnxruntime, openvino), run on an x86-64 machine by qemu-aarch64 (user mode): edgekit's emulated
# "arm64" target profile (edgekit.profiles). Changes nothing system-wide: apt runs with a private state
# folder and APT::Architecture=arm64 (no dpkg --add-architecture); .debs are unpacked with dpkg-deb -x.
#
#   DEST (default: $EDGEKIT_ARM64_SYSROOT, else ~/.cache/edgekit/arm64)
#     sysroot/        Debian bookworm arm64 python3.11 and the shared libraries it and the wheels need
#     site-packages/  arm64 wheels, the versions constraints.txt pins for x86 (pip --target)
#     CPU             the qemu CPU model (cortex-a76: Raspberry Pi 5 / RK3588 / Graviton2 class, with dotprod)
#     MANIFEST        exact .deb and wheel versions
# Env: PYTHON (an x86 Python with pip, to fetch wheels; default python3), CONSTRAINTS (default: the
# project's constraints.txt), ARM64_CPU (cortex-a76 | neoverse-n1 | cortex-a72), MIRROR, SECMIRROR.
# Needs: apt-get, dpkg-deb, qemu-aarch64 (Debian: apt-get install qemu-user). About 40 s, 350 MB.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DEST=${1:-${EDGEKIT_ARM64_SYSROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/edgekit/arm64}}
PYTHON=${PYTHON:-python3}
CONSTRAINTS=${CONSTRAINTS:-$HERE/../constraints.txt}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECMIRROR=${SECMIRROR:-http://deb.debian.org/debian-security}
QEMU=$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)
CPU=${ARM64_CPU:-cortex-a76}
[ -n "$QEMU" ] || { echo "qemu-aarch64 not found (Debian/Ubuntu: apt-get install qemu-user)" >&2; exit 2; }
[ -f "$CONSTRAINTS" ] || { echo "no constraints file at $CONSTRAINTS (set CONSTRAINTS)" >&2; exit 2; }
# Never -cpu max: its SME kernels in XNNPACK gave int8 outputs 16 units off under qemu 7.2.
case $CPU in   # MIDR_EL1 of qemu's model and the matching /proc/cpuinfo features
  cortex-a72)  MIDR=0x410fd083; FEAT="fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid" ;;
  cortex-a76)  MIDR=0x414fd0b1; FEAT="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
  neoverse-n1) MIDR=0x414fd0c1; FEAT="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs" ;;
  *) echo "ARM64_CPU=$CPU: expected cortex-a76, neoverse-n1 or cortex-a72" >&2; exit 2 ;;
esac
DEBS="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libstdc++6
      zlib1g libffi8 libexpat1 libssl3 libbz2-1.0 liblzma5 libuuid1 libcrypt1 libsqlite3-0
      libncursesw6 libtinfo6 libreadline8"
WHEELS="numpy ai-edge-litert onnxruntime openvino"

mkdir -p "$DEST"; DEST=$(cd "$DEST" && pwd)
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
A="$WORK/apt"; mkdir -p "$A"/{lists/partial,cache/archives/partial,debs}; : >"$A/status"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
cat >"$A/sources.list" <<SOURCES
deb [arch=arm64 signed-by=$KEYRING] $MIRROR bookworm main
deb [arch=arm64 signed-by=$KEYRING] $MIRROR bookworm-updates main
deb [arch=arm64 signed-by=$KEYRING] $SECMIRROR bookworm-security main
SOURCES
APTO=(-q -o APT::Architecture=arm64 -o APT::Architectures=arm64
      -o Dir::State::Lists="$A/lists" -o Dir::State::status="$A/status"
      -o Dir::Cache="$A/cache" -o Dir::Etc::SourceList="$A/sources.list"
      -o Dir::Etc::SourceParts=/nonexistent -o APT::Sandbox::User=root)

echo "[1/4] apt index (arm64, private state)"
apt-get "${APTO[@]}" update >/dev/null
echo "[2/4] arm64 python3.11 .debs -> $DEST/sysroot"
( cd "$A/debs" && apt-get "${APTO[@]}" download $DEBS >/dev/null )
rm -rf "$DEST/sysroot" "$DEST/site-packages" "$DEST/CPU"; mkdir -p "$DEST/sysroot"
: >"$DEST/MANIFEST"
for deb in "$A"/debs/*.deb; do dpkg-deb -x "$deb" "$DEST/sysroot"; basename "$deb" >>"$DEST/MANIFEST"; done
for l in lib bin sbin; do [ -e "$DEST/sysroot/$l" ] || ln -s "usr/$l" "$DEST/sysroot/$l"; done
# qemu-user shows the guest the host's x86 /proc/cpuinfo, on which the cpuinfo library inside XNNPACK and
# onnxruntime crashes; qemu -L serves SYSROOT/<path> first, so an arm64 one matching -cpu goes there.
mkdir -p "$DEST/sysroot/proc"; : >"$DEST/sysroot/proc/cpuinfo"
for ((n = 0; n < $(nproc --all); n++)); do
  printf 'processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: %s\nCPU implementer\t: 0x%x\nCPU architecture: 8\nCPU variant\t: 0x%x\nCPU part\t: 0x%03x\nCPU revision\t: %d\n\n' \
    $n "$FEAT" $((MIDR >> 24 & 0xff)) $((MIDR >> 20 & 0xf)) $((MIDR >> 4 & 0xfff)) $((MIDR & 0xf)) >>"$DEST/sysroot/proc/cpuinfo"
  d="$DEST/sysroot/sys/devices/system/cpu/cpu$n/regs/identification"; mkdir -p "$d"
  printf '0x%016x\n' $MIDR >"$d/midr_el1"
done

echo "[3/4] arm64 wheels ($WHEELS, pinned by $(basename "$CONSTRAINTS")) -> $DEST/site-packages"
PLATFORMS=(--platform manylinux2014_aarch64); for i in $(seq 17 36); do PLATFORMS+=(--platform "manylinux_2_${i}_aarch64"); done
"$PYTHON" -m pip install -q --disable-pip-version-check --target "$DEST/site-packages" "${PLATFORMS[@]}" \
  --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
  -c "$CONSTRAINTS" $WHEELS 2>"$WORK/pip.err" || { grep -v "is ignored: it is neither" "$WORK/pip.err" >&2; exit 1; }
rm -rf "$DEST/site-packages/bin"
ls "$DEST/site-packages" | sed -n 's/\.dist-info$//p' >>"$DEST/MANIFEST"

echo "[4/4] stdlib .pyc and a smoke test under qemu-aarch64 -cpu $CPU"
run() { "$QEMU" -cpu "$CPU" -L "$DEST/sysroot" "$DEST/sysroot/usr/bin/python3.11" "$@"; }
run -m compileall -q -j0 "$DEST/sysroot/usr/lib/python3.11" >/dev/null 2>&1 || true  # Debian's postinst does this
PYTHONPATH="$DEST/site-packages" run -c '
import platform, numpy, onnxruntime, openvino, ai_edge_litert.interpreter
print("arm64 python ok:", platform.machine(), platform.python_version(), "numpy", numpy.__version__,
      "onnxruntime", onnxruntime.__version__, "openvino", openvino.__version__)'
echo "$CPU" >"$DEST/CPU"  # written last: its presence says the sysroot is complete
du -sm "$DEST" | awk '{print "arm64 sysroot: " $2 " (" $1 " MB)"}'
