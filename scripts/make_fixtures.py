#!/usr/bin/env python3
"""Writes PyTorch reference fixtures for genalign's tests into test/fixtures/.

Every module scripts/fixtures/fx_<name>.py defines make(out_dir) and writes
test/fixtures/<name>.safetensors with fixed seeds. Run with Debian's python3-torch:

    apt-get install -y python3-torch      # PyTorch 1.13 on bookworm
    npm run fixtures                      # or: /usr/bin/python3 scripts/make_fixtures.py [names...]

A module may list Python packages it needs beyond torch in REQUIRES (fx_text.py: transformers,
run with /opt/hfenv/bin/python); without them it is skipped when making all fixtures and an
error when named. Fixtures are committed; keep the total under ~5 MB.
"""
import importlib
import importlib.util
import os
import pkgutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "fixtures"))

import torch  # noqa: E402

torch.set_num_threads(2)
torch.backends.cudnn.deterministic = True

import fixtures  # noqa: E402


def main(argv):
    out = os.path.join(ROOT, "test", "fixtures")
    os.makedirs(out, exist_ok=True)
    mods = sorted(m.name for m in pkgutil.iter_modules(fixtures.__path__) if m.name.startswith("fx_"))
    wanted = set(argv)
    for name in mods:
        short = name[3:]
        if wanted and short not in wanted:
            continue
        mod = importlib.import_module(f"fixtures.{name}")
        missing = [m for m in getattr(mod, "REQUIRES", []) if importlib.util.find_spec(m) is None]
        if missing:
            msg = f"{short} needs {', '.join(missing)} (see the header of scripts/fixtures/{name}.py)"
            if wanted:
                sys.exit(f"cannot make {msg}")
            print(f"skipped {msg}")
            continue
        mod.make(out)
        print(f"wrote fixtures for {short}")
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(out) for f in fs)
    print(f"test/fixtures total: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
