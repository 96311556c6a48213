#!/usr/bin/env bash
# Runs scripts/make_fixtures.py with a Python that has PyTorch (Debian's python3-torch lives
# in /usr/bin/python3; a pyenv or venv python3 earlier on PATH usually does not have it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for py in "${PYTHON:-}" /usr/bin/python3 python3; do
  [ -n "$py" ] || continue
  if "$py" -c 'import torch' 2>/dev/null; then
    exec "$py" scripts/make_fixtures.py "$@"
  fi
done
echo "No Python with PyTorch found. On Debian/Ubuntu: apt-get install -y python3-torch" >&2
exit 1
