#!/usr/bin/env bash
# Install what videofactory needs on a fresh Debian machine: FFmpeg (system package) and a virtual
# environment with the pinned Python dependencies. Safe to rerun: each step is skipped when done.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  echo "[setup] installing FFmpeg from Debian's packages"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
fi

# Headless Chromium: the stats report's test opens report.html in a real browser.
if ! command -v chromium >/dev/null 2>&1; then
  echo "[setup] installing Chromium from Debian's packages (headless browser for the report test)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi

# Reinstall only when the pinned dependencies changed.
STAMP=.venv/.videofactory-deps
WANT=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[setup] installing Python dependencies (torch is large: a few minutes on a fresh machine)"
  # Some machines cap torch below our pin with a constraint in a global pip.conf; the pins in
  # pyproject.toml are the project's constraints, so this install reads no pip config files
  # (PIP_* environment variables, such as a mirror or certificate, still apply).
  export PIP_CONFIG_FILE=/dev/null
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$WANT" > "$STAMP"
fi
echo "[setup] ready: $(.venv/bin/python --version), $(ffmpeg -version | head -n1)"
