# Sourced by the scripts: picks the cargo target directory. An existing directory outside the
# clone (MERIDIAN_TARGET_DIR, default /work/target) is reused so RocksDB (~8 min) is not rebuilt.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  shared_target="${MERIDIAN_TARGET_DIR:-/work/target}"
  if [ -d "$shared_target" ]; then
    export CARGO_TARGET_DIR="$shared_target"
  fi
fi
