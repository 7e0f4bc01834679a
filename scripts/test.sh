#!/usr/bin/env bash
# The test command: set up a fresh machine, start the one-node SLURM cluster, run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# habits first (seconds): lint, format, types, generated sections
python3 -m ruff check snakemake_deploy_nixsnake tests scripts benchmarks example-workflow
python3 -m ruff format --check snakemake_deploy_nixsnake tests scripts benchmarks example-workflow
python3 -m mypy
python3 scripts/generate.py --check
bash .ci/slurm-up.sh
# The plugin must work on interface 0.18.6 (what snakemake's plugin branch needs; the
# main environment gets it because snakemake 9 pins it) and on the newest 0.21.x:
# run the plugin tests once more in a venv with 0.21.x.
venv="${NIXSNAKE_IFACE_VENV:-/tmp/nixsnake-iface-0.21}"
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install -q --disable-pip-version-check -e . --config-settings editable_mode=compat 'snakemake-interface-software-deployment-plugins>=0.21,<0.22' pytest hypothesis 2>&1 | grep -v -E "^WARNING: (Running pip as|Location)" || true
"$venv/bin/python" -c "import importlib.metadata as m; print('interface', m.version('snakemake-interface-software-deployment-plugins'))"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_plugin.py
exec python3 -m pytest -q -p no:cacheprovider "$@"
