#!/usr/bin/env bash
# The test command: the whole suite in release mode (stress tests need the speed),
# the no_std builds, the embeddable layers' tests with a 32-bit usize (i686),
# then the loom models (exhaustive interleavings) under --cfg loom in their own target dir.
set -euo pipefail
cd "$(dirname "$0")/.."
# The bare-metal kernel that `pgdcache boot` (and crates/cli/tests/boot.rs)
# runs under QEMU: built first, so the boot tests time the kernel, not a
# cold build. It is its own workspace; a missing target is the boot tests'
# to report (SKIP, or failure under CI).
for t in i686-unknown-linux-gnu x86_64-unknown-none; do
  if rustup target list --installed 2>/dev/null | grep -qx "$t"; then
    echo "== kernel for $t"
    (cd crates/kernel && CARGO_TARGET_DIR=../../target/kernel cargo build --release --quiet --target "$t")
  fi
done
cargo test --workspace --release
# The docs build without a warning (broken links, bad code blocks); the
# quick-start doctests ran above, with the golden-file tests.
echo "== cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
# The layers a kernel embeds are no_std + alloc: they build without their std
# feature, and for bare metal where that target is installed (.ci/run adds it).
# Under CI (.ci/run installs the targets) a missing target fails the run.
nostd="-p physmem -p x86paging -p objcache -p pgdcache"
echo "== no_std: $nostd without std"
cargo build --release $nostd --no-default-features
for target in x86_64-unknown-none i686-unknown-linux-gnu; do
  if rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "== no_std: $nostd for $target"
    cargo build --release $nostd --no-default-features --target "$target"
  else
    case "${CI:-}" in
      "" | 0 | false) echo "note: target $target is not installed; its no_std build is skipped (rustup target add $target)" ;;
      *) echo "error: target $target is not installed (CI is set)" >&2; exit 1 ;;
    esac
  fi
done
# 32-bit usize: a 32-bit (2-level/PAE) kernel runs the same layers with a
# 32-bit usize and 64-bit physical addresses. Their own unit and integration
# tests run on i686 in the `test32` profile (Cargo.toml: overflow checks and
# debug assertions on, so an overflowing usize panics instead of wrapping;
# the workspace at opt-level 1, dependencies at 0). All of them, no filter:
# about 20 s of tests on top of ~140 s of CPU to build them; only
# x86paging's 1 GiB-page boot test is cfg'd out (it needs a 2 GiB mmap).
# (The no_std build for i686 is above.) .ci/run adds the target and
# gcc-multilib; under CI a missing one fails here instead of skipping.
i686=i686-unknown-linux-gnu
if rustup target list --installed 2>/dev/null | grep -qx "$i686" &&
  echo 'int main(void) { return 0; }' | cc -m32 -x c - -o "${TMPDIR:-/tmp}/pgdcache-m32-$$" 2>/dev/null; then
  rm -f "${TMPDIR:-/tmp}/pgdcache-m32-$$"
  echo "== 32-bit usize: $nostd tests on $i686"
  cargo test --profile test32 --target "$i686" $nostd
else
  why="target $i686 or cc -m32 missing (rustup target add $i686; apt-get install -y gcc-multilib)"
  case "${CI:-}" in
    "" | 0 | false) echo "SKIP: 32-bit usize tests: $why" ;;
    *) echo "error: the 32-bit usize tests cannot run (CI is set): $why" >&2; exit 1 ;;
  esac
fi
if ls crates/*/tests/loom*.rs >/dev/null 2>&1; then
  for t in crates/*/tests/loom*.rs; do
    crate=$(basename "$(dirname "$(dirname "$t")")")
    pkg=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "crates/$crate/Cargo.toml" | head -1)
    echo "== loom: $pkg $(basename "$t" .rs)"
    if [ "$pkg" = physmem ]; then
      # The page allocator's own models: its locks become loom's too.
      RUSTFLAGS="--cfg loom --cfg loom_physmem" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom-physmem" \
        cargo test --release -p "$pkg" --test "$(basename "$t" .rs)"
    else
      RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom" \
        cargo test --release -p "$pkg" --test "$(basename "$t" .rs)"
    fi
  done
fi
