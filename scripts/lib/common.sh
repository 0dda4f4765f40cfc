# Shared by scripts/test, scripts/sync-generated.sh and scripts/check-generated.sh. Source it; do not run it.
#
# What lives here:
#   find_python 3.13        print the path of a working Python 3.13 (PATH, then pyenv), or fail
#   ensure_venv DIR PY FILE...   (re)create the venv DIR with PY unless its stamp (the hash of PY's version and
#                           of FILE...) is unchanged; the caller installs into it when it returns 0 ("created")
#   ensure_ddev             install ddev (pinned in scripts/requirements-ddev.txt) into .venvs/ddev; sets DDEV_PY
#   generate_into TMP       copy the project to TMP/repo/openai (the integrations-core layout ddev expects)
#                           and regenerate there: metadata.csv, conf.yaml.example, config_models/
#   run_ddev TMP ARGS...    run `ddev -x ARGS...` inside TMP/repo, with its config, HOME and caches in TMP

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CHECK_NAME=openai
VENVS="$REPO/.venvs"

log() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The files the generators write, relative to the project root.
GENERATED_FILES=(
    metadata.csv
    datadog_checks/openai/data/conf.yaml.example
    datadog_checks/openai/config_models
)

_python_version_of() {
    # pyenv shims exist on PATH for versions that are installed but not selected; they fail when run.
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}

find_python() {
    local want="$1" var cand root
    local -a candidates=()
    # An explicit choice wins: PYTHON_3_13=/path/to/python3.13
    var="PYTHON_${want//./_}"
    if [[ -n "${!var:-}" ]]; then
        candidates+=("${!var}")
    fi
    if cand="$(command -v "python$want" 2>/dev/null)"; then
        candidates+=("$cand")
    fi
    root=""
    if command -v pyenv >/dev/null 2>&1; then
        root="$(pyenv root 2>/dev/null || true)"
    fi
    for r in "$root" "${PYENV_ROOT:-}" "$HOME/.pyenv"; do
        [[ -n "$r" && -d "$r/versions" ]] || continue
        # Newest patch release first (3.13.10 before 3.13.9).
        while IFS= read -r cand; do
            candidates+=("$r/versions/$cand/bin/python")
        done < <(cd "$r/versions" && ls -d "$want".* 2>/dev/null | sort -t. -k3,3nr)
    done
    for cand in "/usr/local/bin/python$want" "/usr/bin/python$want"; do
        candidates+=("$cand")
    done
    for cand in "${candidates[@]}"; do
        [[ -x "$cand" ]] || continue
        if [[ "$(_python_version_of "$cand")" == "$want" ]]; then
            printf '%s\n' "$cand"
            return 0
        fi
    done
    return 1
}

_hash() {
    # sha256 of stdin, with whichever tool the machine has.
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum | cut -d' ' -f1
    else
        shasum -a 256 | cut -d' ' -f1
    fi
}

# ensure_venv DIR PYTHON FILE... -> returns 0 when the venv was (re)created and needs installing,
# 1 when the existing one is up to date. The stamp is written by venv_done once the install succeeded.
ensure_venv() {
    local dir="$1" py="$2"
    shift 2
    local stamp
    stamp="$({ "$py" -c 'import sys; print(sys.version)'; cat "$@"; } | _hash)"
    _VENV_STAMP="$stamp"
    if [[ -x "$dir/bin/python" && -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$stamp" ]]; then
        return 1
    fi
    log "Creating $dir with $py"
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    "$py" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    return 0
}

venv_done() {
    printf '%s\n' "$_VENV_STAMP" >"$1/.stamp"
}

ensure_ddev() {
    # DDEV_BIN=/path/to/ddev uses an existing ddev instead (it must be the version pinned below,
    # or the generated files will differ from what CI generates).
    if [[ -n "${DDEV_BIN:-}" ]]; then
        DDEV_PY="$(dirname "$DDEV_BIN")/python"
        return 0
    fi
    local py
    # ddev 20 needs Python 3.13 (pip gives older Pythons ddev 14, which generates different files).
    py="$(find_python 3.13)" || die "ddev needs Python 3.13: put python3.13 on PATH, install it with pyenv, or set PYTHON_3_13=/path/to/python3.13"
    if ensure_venv "$VENVS/ddev" "$py" "$REPO/scripts/requirements-ddev.txt"; then
        log "Installing ddev into $VENVS/ddev"
        "$VENVS/ddev/bin/python" -m pip install --quiet --disable-pip-version-check \
            -r "$REPO/scripts/requirements-ddev.txt" >&2
        venv_done "$VENVS/ddev"
    fi
    DDEV_BIN="$VENVS/ddev/bin/ddev"
    DDEV_PY="$VENVS/ddev/bin/python"
}

# run_ddev TMP ARGS...: ddev on the layout built by generate_into, isolated from the user's ddev config.
run_ddev() {
    local tmp="$1"
    shift
    (
        cd "$tmp/repo"
        export HOME="$tmp/home" XDG_CONFIG_HOME="$tmp/home/.config" XDG_CACHE_HOME="$tmp/home/.cache"
        export XDG_DATA_HOME="$tmp/home/.local/share" DDEV_CONFIG="$tmp/home/ddev.toml"
        # codespell and ruff are looked up on PATH or run with ddev's interpreter.
        export PATH="$(dirname "$DDEV_BIN"):$PATH"
        "$DDEV_BIN" --no-interactive --no-color -x "$@"
    )
}

# generate_into TMP: TMP/repo/openai becomes a copy of the project with every generated file regenerated.
generate_into() {
    local tmp="$1" proj
    proj="$tmp/repo/$CHECK_NAME"
    mkdir -p "$proj" "$tmp/home"
    : >"$tmp/home/ddev.toml"
    local f
    for f in pyproject.toml hatch.toml manifest.json metadata.csv CHANGELOG.md README.md assets datadog_checks; do
        if [[ -e "$REPO/$f" ]]; then
            cp -R "$REPO/$f" "$proj/"
        fi
    done
    find "$proj" -name __pycache__ -type d -prune -exec rm -rf {} +
    # Some ddev validations ask git about the repository; an empty one is enough.
    git -C "$tmp/repo" init --quiet
    mkdir -p "$proj/datadog_checks/$CHECK_NAME/data"

    # metadata.csv is rendered by the catalogue. Run as a file, catalogue.py needs only the standard library,
    # so this does not import the check (nor datadog_checks.base, which the ddev venv lacks); the output is
    # the same as `python -m datadog_checks.openai.catalogue > metadata.csv`.
    "$DDEV_PY" "$proj/datadog_checks/$CHECK_NAME/catalogue.py" >"$proj/metadata.csv.new"
    mv "$proj/metadata.csv.new" "$proj/metadata.csv"

    run_ddev "$tmp" validate config --sync "$CHECK_NAME" >&2
    run_ddev "$tmp" validate models --sync "$CHECK_NAME" >&2
}
