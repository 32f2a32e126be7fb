#!/usr/bin/env bash
# Builds every Weir parser plugin into plugins/target/wasm/NAME.wasm.
#
# - Rust plugins: cargo, release, target wasm32-wasip2 (rustc emits components).
# - Python plugins (plugins/python/NAME/app.py): componentize-py, installed
#   pinned into a venv under ${WEIR_CACHE_DIR:-$HOME/.cache/weir}; plugins/python/
#   (weir_output.py, the packed-output writer) is on every one's path.
# - JavaScript plugins (plugins/js/NAME/app.js, output NAME-js.wasm): componentize-js,
#   pinned with jco in plugins/js/package.json + package-lock.json and installed by
#   `npm ci` into $WEIR_CACHE_DIR/js-<lockfile hash> (no network once there);
#   plugins/js/weir-output.js is the packed-output writer they import.
# Idempotent and quick when nothing changed: outputs are only rewritten when
# their content changes, Python and JS plugins only rebuilt when their inputs are newer.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
# componentize-js and jco: pinned in plugins/js/package.json and package-lock.json.

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wit="$(cd "$here/../wit" && pwd)"
out="$here/target/wasm"
# Cargo's own output may live elsewhere (CI caches it across fresh clones); the
# finished components always land in $out.
build_dir="${WEIR_PLUGINS_TARGET_DIR:-$here/target}"
cache="${WEIR_CACHE_DIR:-$HOME/.cache/weir}"
mkdir -p "$out" "$cache"

log() { printf 'plugins/build.sh: %s\n' "$*" >&2; }

# Copies $1 to $2 unless identical, so unchanged plugins keep their mtime (hot reload).
install_if_changed() {
    if ! cmp -s "$1" "$2"; then
        cp "$1" "$2.tmp.$$" && mv -f "$2.tmp.$$" "$2"
        log "updated $(basename "$2")"
    fi
}

# --- Rust plugins -----------------------------------------------------------
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    log "adding rustup target wasm32-wasip2"
    rustup target add wasm32-wasip2
fi
log "building Rust plugins (release, wasm32-wasip2)"
cargo build --quiet --locked --release --target wasm32-wasip2 --manifest-path "$here/Cargo.toml" --workspace --target-dir "$build_dir"
for manifest in "$here"/*/Cargo.toml; do
    grep -q 'crate-type = \["cdylib"\]' "$manifest" || continue
    crate="$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -1)"
    name="${crate#weir-plugin-}"
    install_if_changed "$build_dir/wasm32-wasip2/release/${crate//-/_}.wasm" "$out/$name.wasm"
done

# --- Python plugins ---------------------------------------------------------
venv="$cache/componentize-py-$COMPONENTIZE_PY_VERSION"
if [[ ! -x "$venv/bin/componentize-py" ]]; then
    log "installing componentize-py $COMPONENTIZE_PY_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
for app in "$here"/python/*/app.py; do
    dir="$(dirname "$app")"
    target="$out/$(basename "$dir")-py.wasm"
    if [[ -f "$target" ]] && [[ -z "$(find "$dir" "$here/python/weir_output.py" "$wit" -name '*.py' -newer "$target" -o -name '*.wit' -newer "$target")" ]]; then
        continue
    fi
    log "building $(basename "$target") with componentize-py $COMPONENTIZE_PY_VERSION"
    (cd "$dir" && "$venv/bin/componentize-py" -d "$wit" -w parser componentize -p "$dir" -p "$here/python" app -o "$target.tmp" >/dev/null)
    mv -f "$target.tmp" "$target"
done

# --- JavaScript plugins -----------------------------------------------------
js="$here/js"
js_key="$(sha256sum "$js/package-lock.json" | cut -c1-16)"
js_env="$cache/js-$js_key"
if [[ ! -x "$js_env/node_modules/.bin/componentize-js" ]]; then
    command -v npm >/dev/null || { log "npm not found: install Node.js 20+ (JavaScript plugins are built with componentize-js)"; exit 1; }
    log "installing componentize-js and jco (plugins/js/package-lock.json) into $js_env"
    rm -rf "$js_env.tmp.$$"
    mkdir -p "$js_env.tmp.$$"
    cp "$js/package.json" "$js/package-lock.json" "$js_env.tmp.$$/"
    # No install scripts: every package it pins ships its binaries (per-platform packages).
    (cd "$js_env.tmp.$$" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
    rm -rf "$js_env" && mv "$js_env.tmp.$$" "$js_env"
fi
# The committed typings (plugins/js/types) are what `jco guest-types` makes of wit/.
cp "$js/jco.mjs" "$js_env/jco.mjs"
types_tmp="$(mktemp -d)"
trap 'rm -rf "$types_tmp"' EXIT
(cd "$here/.." && node "$js_env/jco.mjs" guest-types wit -n parser -o "$types_tmp" -q)
if ! diff -r "$types_tmp" "$js/types" >&2; then
    log "plugins/js/types is out of date with wit/: run \`cp -r $types_tmp/. plugins/js/types/\` (from jco guest-types) and commit it"
    trap - EXIT
    exit 1
fi
for app in "$js"/*/app.js; do
    dir="$(dirname "$app")"
    target="$out/$(basename "$dir")-js.wasm"
    if [[ -f "$target" ]] && [[ -z "$(find "$dir" "$js/weir-output.js" "$js/package-lock.json" "$wit" -newer "$target" \( -name '*.js' -o -name '*.wit' -o -name '*.json' \))" ]]; then
        continue
    fi
    log "building $(basename "$target") with componentize-js"
    # Only the WASI interfaces the host links: no wasi:http (`http`, `fetch-event`).
    "$js_env/node_modules/.bin/componentize-js" "$app" -w "$wit" -n parser -d http fetch-event -o "$target.tmp" >/dev/null
    mv -f "$target.tmp" "$target"
done

log "plugins ready in $out: $(cd "$out" && ls *.wasm | tr '\n' ' ')"
