#!/usr/bin/env bash
# The test command: the whole suite in release mode (stress tests need the speed),
# then the loom models (exhaustive interleavings) under --cfg loom in their own target dir.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release
# The no_std cores build without their std feature.
echo "== no_std: objcache without std"
cargo build --release -p objcache --no-default-features
if ls crates/*/tests/loom*.rs >/dev/null 2>&1; then
  for t in crates/*/tests/loom*.rs; do
    crate=$(basename "$(dirname "$(dirname "$t")")")
    pkg=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "crates/$crate/Cargo.toml" | head -1)
    echo "== loom: $pkg $(basename "$t" .rs)"
    RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom" \
      cargo test --release -p "$pkg" --test "$(basename "$t" .rs)"
  done
fi
