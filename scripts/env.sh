# Sourced by the scripts: one shared build cache outside the clone, so a fresh clone (and CI)
# reuses the ~10-minute RocksDB build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/yeskv-target}"
