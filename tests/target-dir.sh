# Sourced by the scripts: picks the cargo target directory. An existing directory outside the
# clone (MERIDIAN_TARGET_DIR, default /work/target) is reused so RocksDB (~8 min) is not rebuilt.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  shared_target="${MERIDIAN_TARGET_DIR:-/work/target}"
  if [ -d "$shared_target" ]; then
    export CARGO_TARGET_DIR="$shared_target"
  fi
fi

# Cargo fingerprints a workspace's own crates by paths relative to the workspace, so two
# checkouts sharing one target directory share those artifacts too: a checkout whose sources
# are older than artifacts built from another checkout (a clean clone run by CI, say) would run
# the other checkout's code. When the directory was last used from another checkout, this one's
# sources are touched, so cargo rebuilds the workspace's crates (not the dependencies).
if [ -n "${CARGO_TARGET_DIR:-}" ] && [ -d "$CARGO_TARGET_DIR" ]; then
  meridian_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
  meridian_stamp="$CARGO_TARGET_DIR/.meridian-checkout"
  if [ "$(cat "$meridian_stamp" 2>/dev/null)" != "$meridian_root" ]; then
    find "$meridian_root"/proto-resp "$meridian_root"/server "$meridian_root"/geo \
      "$meridian_root"/bench "$meridian_root"/tests -name '*.rs' -exec touch {} + 2>/dev/null || true
    echo "$meridian_root" > "$meridian_stamp"
  fi
fi
