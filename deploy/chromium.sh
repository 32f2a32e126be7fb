#!/usr/bin/env bash
# deploy/chromium.sh: the headless browser the console tests drive (tests/it/console.rs).
#
#   bash deploy/chromium.sh ensure   install Debian's chromium and chromium-driver when
#                                    missing (apt-get; sudo when not root), print their paths
#   bash deploy/chromium.sh check    exit 1 with how to install them when missing
#
# The test finds the programs as `chromium` and `chromedriver` on PATH, or through
# WEIR_CHROMIUM and WEIR_CHROMEDRIVER.
set -euo pipefail

chromium="${WEIR_CHROMIUM:-$(command -v chromium || true)}"
chromedriver="${WEIR_CHROMEDRIVER:-$(command -v chromedriver || true)}"

missing() { [ -z "$chromium" ] || [ ! -x "$chromium" ] || [ -z "$chromedriver" ] || [ ! -x "$chromedriver" ]; }

case "${1:-ensure}" in
    check)
        if missing; then
            echo "chromium.sh: chromium or chromedriver not found; install them with: bash deploy/chromium.sh ensure (Debian: apt-get install chromium chromium-driver)" >&2
            exit 1
        fi
        ;;
    ensure)
        if missing; then
            command -v apt-get >/dev/null 2>&1 || {
                echo "chromium.sh: no apt-get here; install Chromium and its ChromeDriver of the same version, and set WEIR_CHROMIUM and WEIR_CHROMEDRIVER" >&2
                exit 1
            }
            sudo=""
            if [ "$(id -u)" != 0 ]; then
                command -v sudo >/dev/null 2>&1 || { echo "chromium.sh: not root and no sudo: run apt-get install chromium chromium-driver as root" >&2; exit 1; }
                sudo="sudo"
            fi
            echo "chromium.sh: installing chromium and chromium-driver (Debian packages)" >&2
            $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >&2 || {
                $sudo apt-get update -q >&2
                $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >&2
            }
            chromium="$(command -v chromium)"
            chromedriver="$(command -v chromedriver)"
        fi
        echo "$chromium"
        echo "$chromedriver"
        ;;
    *)
        echo "usage: bash deploy/chromium.sh ensure|check" >&2
        exit 2
        ;;
esac
