#!/usr/bin/env bash
# Regenerates metadata.csv (from the catalogue), conf.yaml.example and config_models/ (from spec.yaml, with the
# pinned ddev) in place; scripts/test checks they are in sync. `scripts/dev sync --help` says how (scripts/dev.py).
exec "$(dirname "${BASH_SOURCE[0]}")/dev" sync "$@"
