#!/usr/bin/env bash
# Cold random point reads against the device's limit (issue 4): embedded corekv,
# embedded RocksDB and fio, one after the other, ROUNDS times, in one run.
#
#   bench-compare/cold_reads.sh            (env: ROUNDS=3 RECORDS=100000 VALUE=4096
#                                            CACHE_MIB=16 CLIENTS=64 RUN_SECONDS=10 DIR=/tmp
#                                            SPIN_US=0)
#
# The data set is RECORDS x VALUE bytes (400 MB by default, 25x the cache), read
# with uniformly random keys so that almost every read misses the cache. fio
# reads the same file system with O_DIRECT at 4 KiB (4 KiB-aligned: the
# device's best case, the issue's yardstick) and at the size one corekv record
# read actually is (VALUE + header, rounded up to 512 B, 512 B-aligned).
# Prints one line per run; take medians (this VM drifts by +-15 % in minutes).
set -euo pipefail
cd "$(dirname "$0")"

ROUNDS=${ROUNDS:-3}
RECORDS=${RECORDS:-100000}
VALUE=${VALUE:-4096}
CACHE_MIB=${CACHE_MIB:-16}
CLIENTS=${CLIENTS:-64}
SECONDS_PER_RUN=${RUN_SECONDS:-10}
DIR=${DIR:-/tmp}
SPIN_US=${SPIN_US:-0}
BIN=./target/release/corekv-bench-compare
[ -x "$BIN" ] || ROCKSDB_LIB_DIR=${ROCKSDB_LIB_DIR:-/usr/lib/x86_64-linux-gnu} cargo build --release

FIO_FILE=$DIR/cold_reads.fio
fio --name=layout --filename="$FIO_FILE" --size=1G --bs=1M --rw=write --direct=1 \
    --ioengine=io_uring --iodepth=8 --output=/dev/null
# One record read: value + key + block header and trailer, rounded up to 512 B.
RECORD_READ=$(( (VALUE + 64 + 511) / 512 * 512 ))

fio_iops() { # block size, alignment
  fio --name=r --filename="$FIO_FILE" --size=1G --runtime="$SECONDS_PER_RUN" --time_based \
      --direct=1 --ioengine=io_uring --rw=randread --bs="$1" --blockalign="$2" \
      --iodepth=128 --randrepeat=0 --norandommap --output-format=json |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))'
}

engine() { # corekv | rocksdb
  "$BIN" --records "$RECORDS" --value-size "$VALUE" --cache-mib "$CACHE_MIB" \
      --seconds "$SECONDS_PER_RUN" --clients "$CLIENTS" --dir "$DIR" --workloads C \
      --distribution uniform --engines "$1" --spin-us "$SPIN_US" 2>&1 |
    awk -v s="$SECONDS_PER_RUN" '/^C: [0-9]+ ops/ { printf "%.0f", $2 / s }'
}

echo "# $(date -u +%FT%TZ) nproc=$(nproc) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) kernel=$(uname -r)"
echo "# records=$RECORDS value=$VALUE cache=${CACHE_MIB}MiB clients=$CLIENTS seconds=$SECONDS_PER_RUN spin_us=$SPIN_US"
echo "round | corekv reads/s | rocksdb reads/s | fio 4 KiB IOPS | fio ${RECORD_READ} B IOPS"
for r in $(seq "$ROUNDS"); do
  c=$(engine corekv)
  k=$(engine rocksdb)
  f4=$(fio_iops 4k 4k)
  fr=$(fio_iops "$RECORD_READ" 512)
  echo "$r | $c | $k | $f4 | $fr"
done
rm -f "$FIO_FILE"
