#!/bin/sh
# Build tools/check_kernels.c natively and run it (every SIMD level this CPU can run), then, where
# Debian's gcc-aarch64-linux-gnu and qemu-user are installed, build it for aarch64 and run it
# under qemu-aarch64 (the "portable" and "neon" levels). Exits non-zero on any mismatch.
#   apt-get install gcc-aarch64-linux-gnu qemu-user    # for the aarch64 half
set -eu
cd "$(dirname "$0")/.."
R=src/deepcompress/runtime
SRC="tools/check_kernels.c $R/_simd.c $R/kernels_portable.c $R/kernels_avx2.c $R/kernels_avx512.c $R/kernels_neon.c"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "== native ($(uname -m), ${CC:-cc})"
${CC:-cc} -O2 -Wall -Wextra -Werror -DDC_STANDALONE -I$R $SRC -o "$OUT/check" -lm
"$OUT/check"
if command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null; then
    echo "== aarch64 ($(aarch64-linux-gnu-gcc -dumpfullversion), under $(qemu-aarch64 --version | head -1))"
    aarch64-linux-gnu-gcc -O2 -static -Wall -Wextra -Werror -DDC_STANDALONE -I$R $SRC \
        -o "$OUT/check_aarch64" -lm
    qemu-aarch64 "$OUT/check_aarch64"
else
    echo "== aarch64 skipped: needs aarch64-linux-gnu-gcc and qemu-aarch64 (see the top of this file)"
fi
