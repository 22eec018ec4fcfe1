#!/usr/bin/env bash
# Supply chain: RustSec advisories, licenses, duplicate versions, sources
# (deny.toml). The advisory database is fetched from its home when that is
# reachable; otherwise the offline copy in ../shared/advisory-db (a git
# bundle) is used, and a missing database fails the check rather than
# skipping it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "cargo-deny is not installed: run bash tests/setup.sh (or cargo install --locked cargo-deny)" >&2
  exit 1
fi

# deny.toml's db-path; cargo-deny names the directory after the URL's hash.
DBS="$HOME/.cache/outrigger/advisory-dbs"
DB="$DBS/advisory-db-3157b0e258782691"
BUNDLE="$(cd .. && pwd)/shared/advisory-db/advisory-db.bundle"
mkdir -p "$DBS"

has_db() { git -C "$DB" rev-parse -q --verify HEAD >/dev/null 2>&1; }
# A half-made copy (an interrupted clone) would pass for a database.
has_db || rm -rf "$DB"

offline=(--offline)
if timeout 60 cargo deny --log-level error fetch db >/dev/null 2>&1 && has_db; then
  # A copy cloned from the bundle fetches from the bundle: say which it is.
  echo "== advisories: database from $(git -C "$DB" remote get-url origin) ($(git -C "$DB" log -1 --format='%h %cs'))"
  offline=()
elif [ -f "$BUNDLE" ]; then
  # The bundle's single commit replaces whatever copy is there.
  rm -rf "$DB.tmp"
  git clone -q -b main "$BUNDLE" "$DB.tmp"
  rm -rf "$DB"
  mv "$DB.tmp" "$DB"
  echo "== advisories: upstream unreachable, offline copy of $(git -C "$DB" log -1 --format='%cs')"
elif has_db; then
  echo "== advisories: upstream unreachable, no offline bundle; cached copy of $(git -C "$DB" log -1 --format='%cs')"
else
  echo "advisories: no database (upstream unreachable and no $BUNDLE)" >&2
  exit 1
fi
# Offline, cargo-deny's `cargo metadata` needs every platform's crates at hand.
[ ${#offline[@]} -eq 0 ] || cargo fetch --locked -q
cargo deny --log-level error "${offline[@]}" check advisories licenses bans sources
