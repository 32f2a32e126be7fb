#!/usr/bin/env bash
# Builds every Weir parser plugin into plugins/target/wasm/NAME.wasm.
#
# - Rust plugins: cargo, release, target wasm32-wasip2 (rustc emits components).
# - Python plugins (plugins/python/NAME/app.py): componentize-py, installed
#   pinned into a venv under ${WEIR_CACHE_DIR:-$HOME/.cache/weir}; plugins/python/
#   (weir_output.py, the packed-output writer) is on every one's path.
# Idempotent and quick when nothing changed: outputs are only rewritten when
# their content changes, Python plugins only rebuilt when their inputs are newer.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

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

log "plugins ready in $out: $(cd "$out" && ls *.wasm | tr '\n' ' ')"
