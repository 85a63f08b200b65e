#!/bin/sh
# Installs the tools `cargo bench --bench compare` measures portguard against, into
# `.bench-peers/` at the repository root (ignored by git):
#
#   - systemfd, cargo-watch and watchexec (the crate watchexec-cli), from crates.io, with
#     `cargo install --locked`;
#   - get-port and kill-port, from the npm registry, when `node` and `npm` are on PATH.
#
# Safe to run again: what is already there is kept, and the script says so. The benchmark
# skips, with a note in its table, any peer this could not install.
set -eu

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
peers="$root/.bench-peers"
cargo=${CARGO:-cargo}

# Pinned major versions: a new major release is a new peer to look at before comparing.
SYSTEMFD_VERSION='^0.4'
GET_PORT_VERSION='^7'
KILL_PORT_VERSION='^2'
CARGO_WATCH_VERSION='^8'
WATCHEXEC_VERSION='^2'

mkdir -p "$peers"

# The first line of BINARY --version (watchexec goes on with its build details).
version_of() {
    "$peers/bin/$1" --version 2>/dev/null | head -n 1 || echo "$peers/bin/$1"
}

# crate_peer CRATE BINARY VERSION: installs CRATE (which provides BINARY) from crates.io.
crate_peer() {
    if [ -x "$peers/bin/$2" ]; then
        echo "skipped $1: already installed ($(version_of "$2"))"
    else
        echo "installing $1 $3 from crates.io into $peers"
        "$cargo" install --locked --root "$peers" --version "$3" "$1"
        echo "installed $1: $(version_of "$2")"
    fi
}

crate_peer systemfd systemfd "$SYSTEMFD_VERSION"
crate_peer cargo-watch cargo-watch "$CARGO_WATCH_VERSION"
crate_peer watchexec-cli watchexec "$WATCHEXEC_VERSION"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "skipped get-port and kill-port: node and npm are not both on PATH"
    exit 0
fi

node_dir="$peers/node"
installed() {
    [ -f "$node_dir/node_modules/$1/package.json" ]
}
if installed get-port && installed kill-port; then
    echo "skipped get-port and kill-port: already installed in $node_dir"
else
    echo "installing get-port@$GET_PORT_VERSION and kill-port@$KILL_PORT_VERSION from the npm registry into $node_dir"
    mkdir -p "$node_dir"
    # A package.json of its own, so that npm installs here and not in an enclosing project.
    [ -f "$node_dir/package.json" ] ||
        printf '{\n  "name": "portguard-bench-peers",\n  "private": true\n}\n' >"$node_dir/package.json"
    npm install --prefix "$node_dir" --no-audit --no-fund \
        "get-port@$GET_PORT_VERSION" "kill-port@$KILL_PORT_VERSION"
fi
for package in get-port kill-port; do
    version=$(node -p "require(process.argv[1]).version" "$node_dir/node_modules/$package/package.json")
    echo "$package $version in $node_dir/node_modules"
done
