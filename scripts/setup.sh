#!/usr/bin/env bash
# One-time (idempotent) set-up of a fresh machine of this kind: system packages, a virtual
# environment in .venv, the CPU build of torch, pointstn itself (editable) with its extras.
# Re-running is cheap: the Python part is skipped while its inputs are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
# libosmesa6: offscreen OpenGL for the dataset renderer (pyrender over OSMesa).
# chromium: headless browser that the tests use to render the interactive viewer (predict --html).
SYSTEM_PACKAGES=(libosmesa6 chromium)

say() { printf 'pointstn setup: %s\n' "$*" >&2; }

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        say "installing system packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        say "missing system packages: ${missing[*]}; install them as root: sudo apt-get install -y ${missing[*]}"
        exit 1
    fi
fi

stamp="$VENV/.pointstn-setup"
inputs=$(cat setup.cfg pyproject.toml constraints/cpu.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$inputs" && -x "$VENV/bin/pointstn" ]]; then
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
say "installing torch (CPU build) and pointstn[render,test] into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints/cpu.txt "torch==2.13.0"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints/cpu.txt -e ".[render,test]"
echo "$inputs" >"$stamp"
say "ready: $VENV"
