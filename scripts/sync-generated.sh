#!/usr/bin/env bash
# Regenerate, in place, every file generated from a source of this repository:
#   metadata.csv                                  <- datadog_checks/openai/catalogue.py
#   datadog_checks/openai/data/conf.yaml.example  <- assets/configuration/spec.yaml  (ddev validate config --sync)
#   datadog_checks/openai/config_models/          <- assets/configuration/spec.yaml  (ddev validate models --sync)
#
# ddev works on an integrations-core-like repository (a root folder holding one folder per integration), so the
# generation runs in a temporary copy laid out that way, and the results are copied back. ddev itself is
# installed into .venvs/ddev (Python 3.13, versions pinned in scripts/requirements-ddev.txt) on first use; its
# config, HOME and caches live in the temporary directory, so nothing is read from or written to yours.
#
# config_models/validators.py is written by ddev once, then left to the check's author (integrations-core
# convention): an existing one is kept as it is.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

ensure_ddev
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

generate_into "$TMP"

PROJ="$TMP/repo/$CHECK_NAME"
for f in "${GENERATED_FILES[@]}"; do
    rm -rf "${REPO:?}/$f"
    mkdir -p "$(dirname "$REPO/$f")"
    cp -R "$PROJ/$f" "$REPO/$f"
done
find "$REPO/datadog_checks/$CHECK_NAME/config_models" -name __pycache__ -type d -prune -exec rm -rf {} +
log "Regenerated: ${GENERATED_FILES[*]}"
