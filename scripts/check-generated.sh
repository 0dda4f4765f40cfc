#!/usr/bin/env bash
# Check that the generated files are in sync with their sources, and run the ddev validations that work on
# this repository offline. Exit status 0 when all is well; non-zero, with the reason, otherwise.
#
# 1. Regenerate metadata.csv, conf.yaml.example and config_models/ into a temporary copy (as
#    scripts/sync-generated.sh does) and `diff -r` them against the committed files.
# 2. In that copy (an integrations-core-like layout: <tmp>/repo/openai), run:
#      ddev -x validate config / models     spec.yaml is valid and the generated files match it
#      ddev -x validate metadata            metadata.csv columns, units, types, metric prefix, integration name
#      ddev -x validate service-checks      assets/service_checks.json
#      ddev -x validate package             pyproject.toml name, version path, author emails
#      ddev -x validate http                the check uses the Agent's HTTP wrapper, not `requests` directly
#      ddev -x validate imports             no deprecated datadog_checks imports
#      ddev -x validate legacy-signature    the check uses the current AgentCheck signature
#      ddev -x validate integration-style   check style rules
#      ddev -x validate typos               codespell
#      ddev -x validate readmes             README.md structure (when README.md exists)
#      ddev -x validate dashboards          the manifest's dashboards (once any of them exists)
#    Not run, and why:
#      version                  only works for the `core` repo (needs integrations-core's release tooling)
#      license-headers          requires Datadog's "(C) Datadog, Inc." header: not this project's licence
#      openmetrics              only for core/extras OpenMetrics checks; this is not one
#      agent-reqs, codeowners, labeler, ci, dep, licenses
#                               repository-wide checks of a full integrations-core checkout (requirements
#                               files, CODEOWNERS, labeler and CI config, the dependency pins of every check)
#      pr-description, qa-label need a GitHub pull request (network)
#      jmx-metrics, eula, saved-views   nothing of the kind in this check
#    ddev 20 has no `validate manifest` (manifest.json is validated by Datadog when an integration is
#    published); tests/test_packaging.py checks what can be checked locally.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

ensure_ddev
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

generate_into "$TMP"
PROJ="$TMP/repo/$CHECK_NAME"
find "$PROJ" -name __pycache__ -type d -prune -exec rm -rf {} +

status=0
out_of_sync=()
for f in "${GENERATED_FILES[@]}"; do
    if ! diff -r -u --exclude=__pycache__ "$REPO/$f" "$PROJ/$f" >"$TMP/diff.txt" 2>&1; then
        out_of_sync+=("$f")
        log "--- $f differs from what its source generates:"
        head -n 80 "$TMP/diff.txt" >&2
    fi
done
if ((${#out_of_sync[@]})); then
    log ""
    log "FAILED: generated files out of sync: ${out_of_sync[*]}"
    log "Run scripts/sync-generated.sh and commit the result."
    status=1
fi

validate() {
    local name="$1"
    shift
    log "== ddev validate $name"
    if ! run_ddev "$TMP" validate "$name" "$@" >"$TMP/out.txt" 2>&1; then
        cat "$TMP/out.txt" >&2
        log "FAILED: ddev validate $name $*"
        status=1
    fi
}

validate config "$CHECK_NAME"
validate models "$CHECK_NAME"
validate metadata "$CHECK_NAME"
validate service-checks "$CHECK_NAME"
validate package "$CHECK_NAME"
validate http "$CHECK_NAME"
validate imports "$CHECK_NAME"
validate legacy-signature "$CHECK_NAME"
validate integration-style "$CHECK_NAME"

# `validate typos` exits 1 when the files are clean and 0 when codespell found typos: judge by its output.
log "== ddev validate typos"
run_ddev "$TMP" validate typos "$CHECK_NAME" >"$TMP/out.txt" 2>&1 || true
if ! grep -q 'All files are valid!' "$TMP/out.txt"; then
    cat "$TMP/out.txt" >&2
    log "FAILED: ddev validate typos $CHECK_NAME"
    status=1
fi

if [[ -f "$REPO/README.md" ]]; then
    validate readmes "$CHECK_NAME"
else
    log "== ddev validate readmes: skipped, there is no README.md yet"
fi

# Dashboards are written separately from the manifest that lists them: validate them once any exists.
dashboards="$("$DDEV_PY" -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["assets"].get("dashboards", {}).values()))' "$REPO/manifest.json")"
have_dashboard=0
while IFS= read -r d; do
    [[ -n "$d" && -f "$REPO/$d" ]] && have_dashboard=1
done <<<"$dashboards"
if ((have_dashboard)); then
    validate dashboards "$CHECK_NAME"
else
    log "== ddev validate dashboards: skipped, none of the manifest's dashboards exists yet"
fi

# Lint and format with the pinned ruff and pyproject.toml's settings (config_models/ is generated: excluded).
log "== ruff check, ruff format --check"
if ! "$(dirname "$DDEV_BIN")/ruff" check --quiet "$REPO" >&2 || ! "$(dirname "$DDEV_BIN")/ruff" format --check --quiet "$REPO" >&2; then
    log "FAILED: ruff (run: .venvs/ddev/bin/ruff check --fix . && .venvs/ddev/bin/ruff format .)"
    status=1
fi

if ((status)); then
    log ""
    log "check-generated: FAILED (see above)."
else
    log "check-generated: generated files in sync, ddev validations and ruff passed."
fi
exit "$status"
