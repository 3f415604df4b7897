#!/usr/bin/env bash
# Builds core_bench (Release, build-bench/), runs it with several repetitions
# and prints the medians and the overhead of the Keyring over raw OpenSSL.
#
#   bash bench/core_bench.sh               # 15 repetitions
#   REPETITIONS=30 bash bench/core_bench.sh
#   CORE_BENCH_STRICT=1 bash bench/core_bench.sh   # exit 1 when a ratio > 1.5
#
# Medians of CPU time are used: the machine may be shared, and the median of
# randomly interleaved repetitions is the most stable figure it gives.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build-bench"
REPETITIONS="${REPETITIONS:-15}"

mkdir -p "$BUILD"
GENERATOR=()  # Ninja when available, but never switch an existing build dir
if [ ! -f "$BUILD/CMakeCache.txt" ] && command -v ninja >/dev/null; then GENERATOR=(-G Ninja); fi
cmake -S "$ROOT" -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release -DCONN_CRYPTO_BENCH=ON \
    -DCONN_CRYPTO_SANITIZE=OFF -DCONN_CRYPTO_FUZZ=OFF >"$BUILD/configure.log" 2>&1 ||
    { cat "$BUILD/configure.log"; exit 1; }
cmake --build "$BUILD" --target core_bench

json="$BUILD/core_bench.json"
"$BUILD/core_bench" --benchmark_format=json --benchmark_repetitions="$REPETITIONS" \
    --benchmark_report_aggregates_only=true --benchmark_enable_random_interleaving=true \
    --benchmark_min_time=0.2 >"$json"

/usr/bin/python3 - "$json" "$REPETITIONS" <<'PY'
import json, os, sys

data = json.load(open(sys.argv[1]))
med = {b["run_name"]: b["cpu_time"] for b in data["benchmarks"]
       if b.get("aggregate_name") == "median" and b.get("time_unit", "ns") == "ns"}
cv = {b["run_name"]: b["cpu_time"] for b in data["benchmarks"] if b.get("aggregate_name") == "cv"}

rows = [
    ("keyring encrypt (fixed IV/ts)", "BM_Keyring_Encrypt"),
    ("keyring encrypt (random IV, now)", "BM_Keyring_EncryptRandomIv"),
    ("raw OpenSSL encrypt", "BM_RawOpenSSL_Encrypt"),
    ("keyring decrypt (1-key ring)", "BM_Keyring_Decrypt"),
    ("raw OpenSSL decrypt", "BM_RawOpenSSL_Decrypt"),
    ("decrypt, key at position 1 of 10", "BM_Keyring_DecryptKeyPosition/1"),
    ("decrypt, key at position 2 of 10", "BM_Keyring_DecryptKeyPosition/2"),
    ("decrypt, key at position 10 of 10", "BM_Keyring_DecryptKeyPosition/10"),
    ("decrypt, keys 1 and 10 alternating", "BM_Keyring_DecryptAlternatingKeys"),
]
print("\n%-36s %12s %8s" % ("benchmark (32-byte password)", "median ns", "cv"))
for label, name in rows:
    print("%-36s %12.0f %7.1f%%" % (label, med[name], 100 * cv.get(name, 0)))

target = 1.5
ratios = [("encrypt / raw openssl", med["BM_Keyring_Encrypt"] / med["BM_RawOpenSSL_Encrypt"]),
          ("decrypt / raw openssl", med["BM_Keyring_Decrypt"] / med["BM_RawOpenSSL_Decrypt"])]
print()
for label, r in ratios:
    print("%-36s %11.2fx  %s" % (label, r, "ok" if r <= target else "ABOVE TARGET %.1fx" % target))
ctx = data.get("context", {})
print("\n(median CPU time of %s interleaved repetitions; %s CPUs @ %s MHz; Release build)" % (
    sys.argv[2], ctx.get("num_cpus"), ctx.get("mhz_per_cpu")))
if os.environ.get("CORE_BENCH_STRICT") == "1" and any(r > target for _, r in ratios):
    sys.exit(1)
PY
