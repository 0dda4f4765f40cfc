"""The set-up and the commands behind scripts/demo, scripts/test, scripts/test-install and scripts/sync-generated.sh.

    scripts/dev demo [ARGS]            the check against the OpenAI API simulator (ARGS go to scripts/run_check.py)
    scripts/dev test [OPTIONS] [ARGS]  the suite on Python 3.12 and 3.13, then `check-generated` (ARGS go to pytest)
    scripts/dev test-install [--python X.Y]...   the wheel, installed and run the Agent's way
    scripts/dev sync                   regenerate metadata.csv, conf.yaml.example and config_models/ in place
    scripts/dev check-generated        the generated files against their sources, ddev's offline validations, ruff

Standard library only, and any Python 3.8+ runs it (scripts/dev finds one), because it runs before any venv exists.
Set-up happens on first use, in .venvs/: py3.12 and py3.13 (`pip install -e .[deps]` and requirements-dev.txt),
ddev (Python 3.13, scripts/requirements-ddev.txt), agent-py3.X (scripts/test-install). Each venv is reused until
the interpreter or the files it was installed from change (a hash of both in its .stamp).

Pythons are looked up as PYTHON_3_12=/path/to/python3.12 (an explicit choice), python3.12 on PATH, then under
pyenv's versions ($PYENV_ROOT or ~/.pyenv, newest patch release first), /usr/local/bin and /usr/bin. Where a
command wants several Pythons and one is missing, it warns and goes on with the others, except under CI=true,
where it fails: CI must test every supported Python.

Why not hatch environments (integrations-core runs `ddev test`, which drives hatch and hatch.toml): hatch is not on a
fresh machine, so these commands would first have to find a Python and make a venv for hatch anyway; hatch.toml's
`datadog-checks` environment collector comes with ddev (Python 3.13 only), so the demo and the tests would need 3.13
even where 3.12 is all there is; that collector installs datadog-checks-dev unpinned; and hatch looks for Pythons on
PATH, then downloads one of its own, never under pyenv's versions. hatch.toml stays what ddev reads.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / 'scripts'
VENVS = REPO / '.venvs'
CHECK = 'openai'
SUPPORTED = ('3.12', '3.13')
DEV_REQUIREMENTS = [REPO / 'pyproject.toml', REPO / 'requirements-dev.txt']
DDEV_REQUIREMENTS = SCRIPTS / 'requirements-ddev.txt'
PIP = ['-m', 'pip', '--disable-pip-version-check']

# What the generators write, and what ddev needs to see of the project to generate and validate them.
GENERATED = ['metadata.csv', f'datadog_checks/{CHECK}/data/conf.yaml.example', f'datadog_checks/{CHECK}/config_models']
COPIED = ['pyproject.toml', 'hatch.toml', 'manifest.json', 'metadata.csv', 'CHANGELOG.md', 'README.md', 'assets']
COPIED += ['datadog_checks']
# ddev validations that work offline on a repository holding one check. `scripts/dev check-generated` runs these,
# plus `typos` (judged by its output), `readmes` and `dashboards` (once the files exist). Not run, and why:
#   version                  only works for the `core` repo (needs integrations-core's release tooling)
#   license-headers          requires Datadog's "(C) Datadog, Inc." header: not this project's licence
#   openmetrics              only for core/extras OpenMetrics checks; this is not one
#   agent-reqs, codeowners, labeler, ci, dep, licenses
#                            repository-wide checks of a full integrations-core checkout (requirements files,
#                            CODEOWNERS, labeler and CI config, the dependency pins of every check)
#   pr-description, qa-label need a GitHub pull request (network)
#   jmx-metrics, eula, saved-views   nothing of the kind in this check
# ddev 20 has no `validate manifest` (Datadog validates manifest.json when an integration is published);
# tests/test_packaging.py checks what can be checked locally.
VALIDATIONS = ['config', 'models', 'metadata', 'service-checks', 'package', 'http', 'imports', 'legacy-signature']
VALIDATIONS += ['integration-style']


class Fail(Exception):
    """A failure to report as `error: <message>`, without a traceback."""


def log(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr, flush=True)


def in_ci() -> bool:
    return os.environ.get('CI', '') in ('true', '1')


def run(cmd: list, what: str, quiet: bool = False, hint: str = '', **kw) -> subprocess.CompletedProcess:
    """Run cmd, its output on stderr (or kept, and shown only if it fails, when quiet); if it fails, Fail with
    `<what> failed (exit status N); <hint>`."""
    if quiet:
        kw.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    else:
        kw.setdefault('stdout', sys.stderr)
    proc = subprocess.run([str(c) for c in cmd], **kw)
    if proc.returncode != 0:
        if quiet:
            sys.stderr.write(proc.stdout)
        raise Fail(f'{what} failed (exit status {proc.returncode})' + (f'; {hint}' if hint else ''))
    return proc


# == Pythons ==========================================================================================================


def python_version(exe: str) -> str | None:
    # pyenv puts shims on PATH for versions that are installed but not selected; they fail when run.
    try:
        out = subprocess.run(
            [exe, '-c', 'import sys; print("%d.%d" % sys.version_info[:2])'],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            universal_newlines=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_python(want: str) -> str | None:
    """The path of a working Python `want` (X.Y), or None."""
    candidates = []
    var = 'PYTHON_' + want.replace('.', '_')
    explicit = os.environ.get(var)
    if explicit:
        if python_version(explicit) == want:
            return explicit
        log(f'WARNING: {var}={explicit} is not a working Python {want}: looking elsewhere.')
    candidates.append(shutil.which('python' + want))
    for root in dict.fromkeys([os.environ.get('PYENV_ROOT'), str(Path.home() / '.pyenv')]):
        versions = Path(root) / 'versions' if root else None
        if versions and versions.is_dir():
            found = [p for p in versions.iterdir() if p.name.startswith(want + '.')]
            # Newest patch release first (3.13.10 before 3.13.9); builds such as 3.13.0t after the plain ones.
            found.sort(key=lambda p: int(p.name[len(want) + 1 :]) if p.name[len(want) + 1 :].isdigit() else -1)
            candidates += [str(p / 'bin' / 'python') for p in reversed(found)]
    candidates += [f'/usr/local/bin/python{want}', f'/usr/bin/python{want}']
    for cand in candidates:
        if cand and os.access(cand, os.X_OK) and python_version(cand) == want:
            return cand
    return None


def not_found(versions: list, any_one: bool = False) -> str:
    v, var = versions[0], 'PYTHON_' + versions[0].replace('.', '_')
    which = 'it' if len(versions) == 1 else 'one' if any_one else 'them'
    return (
        f'Python {" and ".join(versions)} not found (looked at ${var}, python{v} on PATH, pyenv\'s versions, '
        f'/usr/local/bin and /usr/bin). Install {which} (`pyenv install {v}` works), or set {var}=/path/to/python{v} '
        'to choose one.'
    )


def find_pythons(versions: list) -> dict:
    """{version: path} of those found; warns about the missing ones, or fails under CI=true or if none is found."""
    found = {v: find_python(v) for v in versions}
    missing = [v for v, py in found.items() if not py]
    found = {v: py for v, py in found.items() if py}
    if not found:
        raise Fail(not_found(missing))
    if missing:
        if in_ci():
            raise Fail(f'{not_found(missing)} CI must test every supported Python.')
        log(f'WARNING: {not_found(missing)} Going on with Python {" ".join(found)} only.')
    return found


# == venvs ============================================================================================================


def ensure_venv(venv: Path, py: str, stamped: list, install: list, what: str, then=None) -> None:
    """(Re)create `venv` with `py` and `pip install *install` into it, unless its stamp (a hash of py's version and of
    the `stamped` files) says the existing one was made that way. `then()` runs before the stamp is written."""
    digest = hashlib.sha256(subprocess.run([py, '-c', 'import sys; print(sys.version)'], stdout=subprocess.PIPE).stdout)
    for f in stamped:
        digest.update(Path(f).read_bytes())
    stamp, stamp_file = digest.hexdigest(), venv / '.stamp'
    if (venv / 'bin' / 'python').exists() and stamp_file.is_file() and stamp_file.read_text().strip() == stamp:
        return
    log(f'Creating {venv} with {py}')
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    hint = f'{py} needs its venv module and ensurepip (Debian/Ubuntu: apt install python{python_version(py)}-venv)'
    run([py, '-m', 'venv', venv], f'creating {venv}', hint=hint)
    vpy, hint = venv / 'bin' / 'python', f"see pip's output above; the next run creates {venv} afresh"
    run([vpy, *PIP, 'install', '--quiet', '--upgrade', 'pip'], f'upgrading pip in {venv}', hint=hint)
    log(what)
    run([vpy, *PIP, 'install', '--quiet', *install], f'pip install into {venv}', hint=hint)
    if then:
        then()
    stamp_file.write_text(stamp + '\n')


def dev_venv(version: str, py: str) -> Path:
    """.venvs/py3.X: the check in editable mode with its test requirements, used by the tests and the demo."""
    venv = VENVS / f'py{version}'
    install = ['-e', f'{REPO}[deps]', '-r', REPO / 'requirements-dev.txt']
    ensure_venv(venv, py, DEV_REQUIREMENTS, install, f'Installing the check and its test requirements into {venv}')
    return venv / 'bin' / 'python'


# == generated files and ddev =========================================================================================


class Ddev:
    """The pinned ddev (.venvs/ddev), run on a copy of the project laid out as integrations-core is (TMP/repo/openai),
    with its config, HOME and caches in TMP, so nothing is read from or written to the user's.
    DDEV_BIN=/path/to/ddev uses an existing ddev instead (it must be the pinned version, or the generated files
    differ from what CI generates)."""

    def __init__(self, tmp: Path):
        if os.environ.get('DDEV_BIN'):
            self.bin = Path(os.environ['DDEV_BIN'])
        else:
            # ddev 20 needs Python 3.13 (pip gives older Pythons ddev 14, which generates different files).
            py = find_python('3.13')
            if not py:
                raise Fail(f'ddev needs Python 3.13. {not_found(["3.13"])}')
            install = ['-r', DDEV_REQUIREMENTS]
            ensure_venv(VENVS / 'ddev', py, [DDEV_REQUIREMENTS], install, f'Installing ddev into {VENVS / "ddev"}')
            self.bin = VENVS / 'ddev' / 'bin' / 'ddev'
        self.python, self.ruff = self.bin.parent / 'python', self.bin.parent / 'ruff'
        self.tmp, self.project = tmp, tmp / 'repo' / CHECK
        home = tmp / 'home'
        self.env = dict(os.environ, HOME=str(home), DDEV_CONFIG=str(home / 'ddev.toml'))
        self.env.update(XDG_CONFIG_HOME=f'{home}/.config', XDG_CACHE_HOME=f'{home}/.cache')
        self.env.update(XDG_DATA_HOME=f'{home}/.local/share')
        # codespell and ruff are looked up on PATH or run with ddev's interpreter.
        self.env['PATH'] = f'{self.bin.parent}{os.pathsep}{os.environ.get("PATH", "")}'

    def cmd(self, *args: str) -> list:
        # -x (--here): the current folder (TMP/repo) is the repository, whatever ddev's config says.
        return [self.bin, '--no-interactive', '--no-color', '-x', *args]

    def __call__(self, *args: str, quiet: bool = False) -> subprocess.CompletedProcess:
        return run(self.cmd(*args), f'ddev {" ".join(args)}', quiet=quiet, cwd=self.tmp / 'repo', env=self.env)

    def generate(self) -> Path:
        """Copy the project to TMP/repo/openai and regenerate every generated file there; returns that folder."""
        ignore = shutil.ignore_patterns('__pycache__')
        for name in COPIED:
            src = REPO / name
            if src.is_dir():
                shutil.copytree(src, self.project / name, ignore=ignore)
            elif src.is_file():
                self.project.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, self.project / name)
        (self.tmp / 'home').mkdir(parents=True, exist_ok=True)
        (self.tmp / 'home' / 'ddev.toml').write_text('')
        # Some ddev validations ask git about the repository; an empty one is enough.
        run(['git', 'init', '--quiet', self.tmp / 'repo'], 'git init')
        (self.project / 'datadog_checks' / CHECK / 'data').mkdir(parents=True, exist_ok=True)
        # metadata.csv is rendered by the catalogue. Run as a file, catalogue.py needs only the standard library, so
        # this imports neither the check nor datadog_checks.base (which ddev's venv lacks); the output is the same as
        # `python -m datadog_checks.openai.catalogue > metadata.csv`.
        catalogue = self.project / 'datadog_checks' / CHECK / 'catalogue.py'
        csv = run([self.python, catalogue], 'rendering metadata.csv', stdout=subprocess.PIPE).stdout
        (self.project / 'metadata.csv').write_bytes(csv)
        self('validate', 'config', '--sync', CHECK)
        self('validate', 'models', '--sync', CHECK)
        return self.project


def files_under(path: Path) -> dict:
    if path.is_file():
        return {'': path}
    return {
        p.relative_to(path).as_posix(): p
        for p in sorted(path.rglob('*'))
        if p.is_file() and '__pycache__' not in p.relative_to(path).parts
    }


def differences(name: str, committed: Path, generated: Path) -> list:
    """A unified diff (and the files only one side has) of committed against generated, as lines."""
    ours, theirs = files_under(committed), files_under(generated)
    out = []
    for rel in sorted(set(ours) | set(theirs)):
        label = f'{name}/{rel}' if rel else name
        if rel not in theirs:
            out.append(f'{label}: not generated (delete it)\n')
        elif rel not in ours:
            out.append(f'{label}: generated, missing from the repository\n')
        elif ours[rel].read_bytes() != theirs[rel].read_bytes():
            a, b = (p.read_text(errors='replace').splitlines(keepends=True) for p in (ours[rel], theirs[rel]))
            out += difflib.unified_diff(a, b, f'{label} (committed)', f'{label} (generated)')
    return out


def cmd_sync(args: list) -> int:
    """Regenerate, in place, every file generated from a source of this repository:
      metadata.csv                                  <- datadog_checks/openai/catalogue.py
      datadog_checks/openai/data/conf.yaml.example  <- assets/configuration/spec.yaml  (ddev validate config --sync)
      datadog_checks/openai/config_models/          <- assets/configuration/spec.yaml  (ddev validate models --sync)
    ddev works on an integrations-core-like repository (a root folder holding one folder per integration), so the
    generation runs in a temporary copy laid out that way, and the results are copied back. config_models/
    validators.py is written by ddev once, then left to the check's author (integrations-core convention): an
    existing one is kept as it is."""
    if args:
        raise Fail(f'unexpected arguments: {" ".join(args)}')
    with tempfile.TemporaryDirectory() as tmp:
        project = Ddev(Path(tmp)).generate()
        for name in GENERATED:
            dest, src = REPO / name, project / name
            if dest.is_dir():
                shutil.rmtree(dest)
            if src.is_dir():
                shutil.copytree(src, dest, ignore=shutil.ignore_patterns('__pycache__'))
            else:
                shutil.copy2(src, dest)
    log(f'Regenerated: {" ".join(GENERATED)}')
    return 0


def cmd_check_generated(args: list) -> int:
    """Check that the generated files are in sync with their sources (regenerated into a temporary copy, as
    `sync` does, and compared), then run there the ddev validations that work on this repository offline
    (VALIDATIONS in scripts/dev.py, with why the others are not run), then ruff check and ruff format --check.
    Exit status 0 when all is well; 1, with the reasons, otherwise."""
    if args:
        raise Fail(f'unexpected arguments: {" ".join(args)}')
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        ddev = Ddev(Path(tmp))
        project = ddev.generate()
        for name in GENERATED:
            diff = differences(name, REPO / name, project / name)
            if diff:
                failed.append(name)
                log(f'--- {name} differs from what its source generates:', ''.join(diff[:80]).rstrip('\n'))
        if failed:
            log('', f'FAILED: generated files out of sync: {" ".join(failed)}')
            log('Run scripts/sync-generated.sh and commit the result.')

        def validate(name: str) -> None:
            log(f'== ddev validate {name}')
            try:
                ddev('validate', name, CHECK, quiet=True)
            except Fail as e:
                log(f'FAILED: {e}')
                failed.append(f'ddev validate {name}')

        for name in VALIDATIONS:
            validate(name)
        # `validate typos` exits 1 when the files are clean and 0 when codespell found typos: judge by its output.
        log('== ddev validate typos')
        kw = {'cwd': ddev.tmp / 'repo', 'env': ddev.env, 'stdout': subprocess.PIPE, 'stderr': subprocess.STDOUT}
        out = subprocess.run([str(c) for c in ddev.cmd('validate', 'typos', CHECK)], **kw)
        if b'All files are valid!' not in out.stdout:
            log(out.stdout.decode(errors='replace'), f'FAILED: ddev validate typos {CHECK}')
            failed.append('ddev validate typos')
        if (REPO / 'README.md').is_file():
            validate('readmes')
        else:
            log('== ddev validate readmes: skipped, there is no README.md yet')
        # Dashboards are written separately from the manifest that lists them: validate them once any exists.
        dashboards = json.loads((REPO / 'manifest.json').read_text())['assets'].get('dashboards', {}).values()
        if any((REPO / d).is_file() for d in dashboards):
            validate('dashboards')
        else:
            log("== ddev validate dashboards: skipped, none of the manifest's dashboards exists yet")

    # Lint and format with the pinned ruff and pyproject.toml's settings (config_models/ is generated: excluded).
    log('== ruff check, ruff format --check')
    try:
        run([ddev.ruff, 'check', '--quiet', REPO], 'ruff check', cwd=REPO)
        run([ddev.ruff, 'format', '--check', '--quiet', REPO], 'ruff format --check', cwd=REPO)
    except Fail as e:
        log(f'FAILED: {e} (run: .venvs/ddev/bin/ruff check --fix . && .venvs/ddev/bin/ruff format .)')
        failed.append('ruff')
    if failed:
        log('', f'check-generated: FAILED: {", ".join(failed)} (see above).')
        return 1
    log('check-generated: generated files in sync, ddev validations and ruff passed.')
    return 0


# == commands =========================================================================================================


def take_options(args: list, flags: tuple = ()) -> tuple:
    """(the --python versions or all supported, the `flags` given, the other arguments); after `--`, everything is
    one of the other arguments."""
    versions, given, rest = [], set(), []
    it = iter(args)
    for a in it:
        if a in flags:
            given.add(a)
        elif a == '--python':
            v = next(it, None)
            if v is None:
                raise Fail('--python needs a version, e.g. --python 3.13')
            versions.append(v)
        elif a.startswith('--python='):
            versions.append(a.split('=', 1)[1])
        elif a == '--':
            rest += list(it)
        else:
            rest.append(a)
    return versions or list(SUPPORTED), given, rest


def cmd_demo(args: list) -> int:
    """Run the check as `agent check openai` would, against the built-in OpenAI API simulator (no Agent, no key):
    three runs five simulated minutes apart, then a summary. Installs the check into .venvs/py3.X (the first of
    3.12 and 3.13 found) on first use. Arguments go to scripts/run_check.py (`scripts/demo --help` lists them)."""
    for v in SUPPORTED:
        py = find_python(v)
        if py:
            break
    else:
        raise Fail(not_found(list(SUPPORTED), any_one=True))
    python = str(dev_venv(v, py))
    sys.stdout.flush()
    os.execv(python, [python, str(SCRIPTS / 'run_check.py'), *args])


def cmd_test(args: list) -> int:
    """Run the test suite under Python 3.12 and 3.13 (the Agent embeds 3.12 before 7.72, 3.13 from 7.72 on), then
    `check-generated` (the generated files in sync with their sources, ddev's offline validations, ruff).
      scripts/test                       everything
      scripts/test -k costs -x           extra arguments go to pytest
      scripts/test tests/test_config.py  only those tests (any argument naming a path replaces `tests`)
      scripts/test --no-sync-check       skip check-generated (always run under CI=true)
      scripts/test --python 3.13         one Python only (repeatable)
    pytest's own options: .venvs/py3.12/bin/python -m pytest --help (after a first scripts/test)."""
    versions, flags, pytest_args = take_options(args, ('--no-sync-check',))
    sync_check = in_ci() or '--no-sync-check' not in flags
    # `tests` unless the arguments name test files or directories themselves (scripts/test tests/test_config.py).
    names_paths = any(not a.startswith('-') and Path(a.split('::')[0]).exists() for a in pytest_args)
    targets = [] if names_paths else ['tests']
    failed = []
    pythons = find_pythons(versions)
    for v, py in pythons.items():
        python = dev_venv(v, py)
        log('', f'=== pytest under Python {v} ({python.parent.parent})')
        if subprocess.run([str(python), '-m', 'pytest', *targets, *pytest_args]).returncode != 0:
            failed.append(f'pytest (Python {v})')
    if sync_check:
        log('', '=== generated files and ddev validations (scripts/dev check-generated)')
        try:
            if cmd_check_generated([]) != 0:
                failed.append('check-generated')
        except Fail as e:
            log(f'error: {e}')
            failed.append('check-generated')
    log('')
    if failed:
        log(f'FAILED: {" ".join(failed)}')
        return 1
    log(f'OK: tests passed on Python {" ".join(pythons)}{", generated files in sync" * sync_check}')
    return 0


ADMIN_KEY = 'sk-admin-install-test'
SIMULATOR_TIMEOUT = 30


def agent_requirement(py: str) -> str:
    """What the Agent ships, in the range pyproject.toml requires: datadog-checks-base[deps]<its specifier>."""
    read = 'import json, sys, tomllib; toml = tomllib.load(open(sys.argv[1], "rb")); '
    read += 'print(json.dumps(toml["project"]["dependencies"]))'
    out = run([py, '-c', read, REPO / 'pyproject.toml'], 'reading pyproject.toml', stdout=subprocess.PIPE)
    deps = json.loads(out.stdout)
    base = [d for d in deps if re.match(r'datadog-checks-base(?![\w.-])', d)]
    if len(base) != 1:
        raise Fail(f'pyproject.toml: expected one datadog-checks-base dependency, found {base}')
    m = re.fullmatch(r'datadog-checks-base\s*(?:\[[^\]]*\])?\s*([^;]*?)\s*', base[0])
    if not m:
        raise Fail(f'pyproject.toml: cannot read the datadog-checks-base dependency {base[0]!r}')
    return f'datadog-checks-base[deps]{m.group(1)}'


def floor_requirement(py: str) -> str:
    """The oldest base the check supports, pinned: what the oldest supported Agent ships."""
    m = re.search(r'>=\s*([\w.]+)', agent_requirement(py))
    if not m:
        raise Fail('pyproject.toml: the datadog-checks-base dependency has no lower bound (>=)')
    return f'datadog-checks-base[deps]=={m.group(1)}'


def agent_venv(v: str, py: str, tmp: Path, floor: bool = False) -> Path:
    """.venvs/agent-py3.X holding only what the Agent ships; its `pip freeze` at creation is its
    final_constraints-py3.txt, as in the Agent. Recreated when the requirement or the interpreter change, or when
    it holds more than at its creation. With `floor`, .venvs/agent-floor-py3.X holds the oldest base supported."""
    if floor:
        venv, requirement = VENVS / f'agent-floor-py{v}', floor_requirement(py)
    else:
        venv, requirement = VENVS / f'agent-py{v}', agent_requirement(py)
    python, constraints = venv / 'bin' / 'python', venv / 'final_constraints-py3.txt'
    requirements = tmp / f'agent-requirements-{v}.txt'
    requirements.write_text(f'# scripts/test-install: the Agent-shipped set, nothing else\n{requirement}\n')
    if (venv / '.stamp').is_file() and constraints.is_file():
        freeze = [str(python), *PIP, 'freeze', '--exclude', 'datadog-openai']
        freeze = subprocess.run(freeze, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if freeze.returncode != 0 or freeze.stdout != constraints.read_bytes():
            log(f'{venv} holds more than the Agent ships: recreating it')
            (venv / '.stamp').unlink()

    def freeze():
        constraints.write_bytes(run([python, *PIP, 'freeze'], f'pip freeze in {venv}', stdout=subprocess.PIPE).stdout)

    ensure_venv(venv, py, [requirements], ['-r', requirements], f'Installing {requirement} into {venv}', freeze)
    return venv


class Simulator:
    """The OpenAI Admin API simulator, from the dev venv, in the background; `url` is the first line it prints."""

    def __init__(self, python: Path, work: Path):
        self.out, self.err = work / 'simulator.out', work / 'simulator.err'
        cmd = [python, '-m', 'tests.simulator', '--port', '0', '--accelerate', '300', '--admin-key', ADMIN_KEY]
        with open(self.out, 'w') as out, open(self.err, 'w') as err:
            self.proc = subprocess.Popen([str(c) for c in cmd], cwd=REPO, stdout=out, stderr=err)
        try:
            self.url = self._wait_for_url()
        except BaseException:
            self.stop()
            raise

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + SIMULATOR_TIMEOUT
        while time.monotonic() < deadline:
            line, newline, _ = self.out.read_text().partition('\n')
            if newline:
                if not line.startswith('http://'):
                    raise Fail(f'the simulator printed {line!r} instead of its URL')
                return line
            if self.proc.poll() is not None:
                raise Fail(f'the simulator exited before printing its URL:\n{self.err.read_text()}')
            time.sleep(0.1)
        raise Fail(f'the simulator printed no URL within {SIMULATOR_TIMEOUT}s:\n{self.err.read_text()}')

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# Agent 7.71, the oldest the check supports, embeds Python 3.12 (3.13 from 7.72 on).
FLOOR_PYTHON = '3.12'


def test_install(v: str, py: str, tmp: Path) -> str:
    """Steps 1-5 of cmd_test_install for one Python; returns the result line, raises Fail on the first failure."""
    started = time.monotonic()
    work = tmp / f'py{v}'
    for d in ('dist', 'confd', 'cwd'):
        (work / d).mkdir(parents=True)
    dev = dev_venv(v, py)
    log(f'=== Python {v}: building the wheel')
    run([dev, '-m', 'build', '--wheel', '--no-isolation', '--outdir', work / 'dist', REPO], 'building the wheel', True)
    wheels = sorted((work / 'dist').glob('*.whl'))
    if len(wheels) != 1:
        raise Fail(f'expected one wheel, got: {wheels}')
    wheel = wheels[0]
    result = install_and_run(v, dev, agent_venv(v, py, tmp), wheel, work)
    if v == FLOOR_PYTHON:
        # The oldest Agent the check supports embeds this Python with the oldest base it supports.
        floor = tmp / f'py{v}-floor'
        for d in ('confd', 'cwd'):
            (floor / d).mkdir(parents=True)
        result += '; ' + install_and_run(v, dev, agent_venv(v, py, tmp, floor=True), wheel, floor)
    return f'Python {v}: OK ({time.monotonic() - started:.0f}s) {result}'


def install_and_run(v: str, dev: Path, agent: Path, wheel: Path, work: Path) -> str:
    """Steps 3-5 of cmd_test_install in one Agent-like venv; returns what they found."""
    apy = agent / 'bin' / 'python'
    constraints = agent / 'final_constraints-py3.txt'
    base_version = re.search(r'(?im)^datadog-checks-base==(\S+)', constraints.read_text())
    base_version = base_version.group(1) if base_version else '?'
    # `datadog-agent integration install -w WHEEL`, from outside the repository.
    log(f'=== Python {v}: installing {wheel.name} into {agent}')
    install = ['install', '--constraint', constraints, '--no-cache-dir', '--no-index', '--no-deps', '--force-reinstall']
    run([apy, *PIP, *install, wheel], 'installing the wheel', True, cwd=work / 'cwd')
    run([apy, *PIP, 'check'], 'pip check (the installed wheel needs something the Agent does not ship)', True)

    # What got installed and what importing it loads, then two runs against the simulator: `python -I` in a
    # folder outside the repository, so only the wheel can be imported.
    env = {k: val for k, val in os.environ.items() if k != 'PYTHONPATH'}
    smoke = [apy, '-I', SCRIPTS / 'agent_smoke.py']
    out = {'cwd': work / 'cwd', 'env': env, 'stdout': subprocess.PIPE, 'universal_newlines': True}
    installed = run([*smoke, 'installed', wheel, REPO, work / 'confd'], 'checking the installed package', **out)
    installed = installed.stdout.strip()
    log(installed)
    log(f'=== Python {v}: running the check against the simulator')
    simulator = Simulator(dev, work)
    try:
        ran = run([*smoke, 'run', simulator.url, ADMIN_KEY, REPO], 'running the installed check', **out).stdout.strip()
    except Fail as e:
        tail = ' '.join(simulator.err.read_text().splitlines()[-3:])
        raise Fail(f'{e} (simulator log: {tail})') from None
    finally:
        simulator.stop()
    log(ran)
    return (
        f'{wheel.name} -> {agent.relative_to(REPO)} [datadog-checks-base {base_version} only]: '
        f'{installed.partition(": ")[2]}; {ran}'
    )


def cmd_test_install(args: list) -> int:
    """Install the check the way the Agent does, then run it, under Python 3.12 and 3.13 (--python X.Y: only that
    one, repeatable). For each Python:
      1. build the wheel (python -m build --wheel --no-isolation, with the dev venv .venvs/py3.X) into a temp dir;
      2. keep .venvs/agent-py3.X holding only what the Agent ships: datadog-checks-base[deps], in the version range
         pyproject.toml requires. It is reused until that range or the interpreter change, and recreated if anything
         else was installed into it. Its `pip freeze` at creation is its final_constraints-py3.txt, as in the Agent;
      3. install the wheel as `datadog-agent integration install -w` does: pip install --constraint
         final_constraints-py3.txt --no-cache-dir --no-index --no-deps, plus --force-reinstall (the venv is reused);
      4. check the installed package (scripts/agent_smoke.py installed): it holds data/conf.yaml.example (the Agent
         copies data/*.yaml* into conf.d/openai.d/, done here into a temp conf.d), it installs nothing but
         datadog_checks/openai (no tests, no simulator, not the datadog_checks/__init__.py of datadog-checks-base),
         it requires nothing the Agent lacks (pip check), and importing it loads modules from the standard library
         and that venv's site-packages only;
      5. start the OpenAI Admin API simulator (from the dev venv), then run the check twice from the clean venv
         (scripts/agent_smoke.py run), with `python -I` in a temp dir outside the repository so its sources cannot
         shadow the wheel: the runs succeed, openai.can_connect is OK, openai.check.can_connect and
         openai.api.usage.* metrics were sent.
    The dev venvs are the ones scripts/test creates (same stamp, same install), so they are created here if missing."""
    versions, _, rest = take_options(args)
    if rest:
        raise Fail(f'unknown argument: {rest[0]} (see scripts/test-install --help)')
    pythons = find_pythons(versions)
    failed = []
    with tempfile.TemporaryDirectory(prefix='openai-test-install.') as tmp:
        for v, py in pythons.items():
            log('')
            try:
                print(test_install(v, py, Path(tmp)), flush=True)
            except Fail as e:
                log(f'error: {e}')
                print(f'Python {v}: FAILED (see above)', flush=True)
                failed.append(f'Python {v}')
    log('')
    if failed:
        log(f'FAILED: {" ".join(failed)}')
        return 1
    log(f"OK: the wheel installs and runs the Agent's way on Python {' '.join(pythons)}")
    return 0


# == mutation testing ==================================================================================================

# The modules that decide what is submitted and when, by the short names scripts/mutation takes.
MUTATED = {
    'usage': 'sources.usage',
    'costs': 'sources.costs',
    'rows': 'sources.rows',
    'pages': 'sources.pages',
    'ledger': 'ledger',
    'check': 'check',
    'client': 'client',
}


def mutation_results(mutmut: Path) -> dict:
    """Every mutant's status as `mutmut results` tells it (killed, survived, not checked...)."""
    out = run([mutmut, 'results', '--all', 'true'], 'mutmut results', stdout=subprocess.PIPE, universal_newlines=True)
    return dict(line.strip().rpartition(': ')[::2] for line in out.stdout.splitlines())


def mutation_summary(results: dict) -> str:
    counts = {}
    for name, status in results.items():
        module = mutation_module(name)
        if module:
            counts.setdefault(module, {}).setdefault(status, 0)
            counts[module][status] += 1
    rows = [f'{"module":<16} {"killed":>7} {"survived":>9} {"timeout":>8} {"skipped":>8} {"other":>6}']
    for module, c in sorted(counts.items()):
        known = [c.get(k, 0) for k in ('killed', 'survived', 'timeout', 'skipped')]
        rows.append(
            f'{module:<16} {known[0]:>7} {known[1]:>9} {known[2]:>8} {known[3]:>8} {sum(c.values()) - sum(known):>6}'
        )
    rows.append('(other: not checked yet, no covering test, suspicious or segfault; `mutmut results` names them)')
    return '\n'.join(rows)


# mutmut 3.8.1 makes its mutants as the first step of `mutmut run`, which then needs their names; a sample is chosen
# from them before any test runs, so this makes them with the same calls (pinned version: these are its internals).
GENERATE_MUTANTS = """
import json, pathlib, mutmut.__main__ as m
m.set_mutant_under_test('mutant_generation')
m.copy_src_dir(); m.copy_also_copy_files(); m.setup_source_paths(); m.store_lines_covered_by_tests()
m.create_mutants(2)
names = []
for meta in pathlib.Path('mutants').rglob('*.py.meta'):
    names += json.loads(meta.read_text())['exit_code_by_key']
print(json.dumps(names))
"""


def mutation_sample(venv: Path, modules: list, per_module: int, seed: int) -> list:
    """`per_module` mutants drawn at random (seeded: the same code and seed draw the same ones) from each module's."""
    import random

    out = run(
        [venv / 'bin' / 'python', '-c', GENERATE_MUTANTS],
        'generating the mutants',
        stdout=subprocess.PIPE,
        universal_newlines=True,
        cwd=REPO,
    )
    names = json.loads(out.stdout.splitlines()[-1])
    rng = random.Random(seed)
    chosen = []
    for module in modules:
        of_module = sorted(n for n in names if mutation_module(n) == module)
        chosen += rng.sample(of_module, min(per_module, len(of_module)))
    return chosen


def mutation_module(name: str) -> str | None:
    for m in sorted(MUTATED.values(), key=len, reverse=True):
        if name.startswith(f'datadog_checks.openai.{m}.'):
            return m
    return None


def sample_summary(results: dict, chosen: list) -> str:
    """The sample's results per module, and the share killed with its 95% interval (Wilson's)."""
    counts, total = {}, {}
    for name in chosen:
        result = results.get(name, 'not run')
        of_module = counts.setdefault(mutation_module(name), {})
        of_module[result] = of_module.get(result, 0) + 1
        total[result] = total.get(result, 0) + 1
    rows = [f'{"module":<16} {"sampled":>8} {"killed":>7} {"survived":>9} {"other":>6}']
    for module, c in sorted(counts.items()) + [('all', total)]:
        n = sum(c.values())
        k, s = c.get('killed', 0) + c.get('timeout', 0), c.get('survived', 0)
        rows.append(f'{module:<16} {n:>8} {k:>7} {s:>9} {n - k - s:>6}')
    k, s = total.get('killed', 0) + total.get('timeout', 0), total.get('survived', 0)
    if k + s:
        n, p, z = k + s, k / (k + s), 1.96
        scale = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / scale
        half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / scale
        rows.append(
            f'killed {p:.1%} of the {n} sampled mutants with a verdict (95%: {centre - half:.1%} to '
            f'{centre + half:.1%} of all mutants)'
        )
    rows.append('(killed counts timeouts; other: no covering test, not run, suspicious or segfault)')
    return '\n'.join(rows)


def cmd_mutation(args: list) -> int:
    """Mutation testing (mutmut, pinned in scripts/requirements-mutation.txt) of the modules that decide what is
    submitted and when. Not part of scripts/test or CI: it takes hours (README, "Mutation testing").

      scripts/mutation ledger               one module (usage, costs, rows, pages, ledger, check, client);
                                            several may be given
      scripts/mutation 'check.*commit*'     mutants by mutmut's name globs, relative to datadog_checks.openai
      scripts/mutation                      every module
      scripts/mutation --jobs 1 ...         workers (default 2; the machine's cores are shared)
      scripts/mutation --sample 25 [--seed 1] [modules]
                                            25 mutants drawn at random from each module (all of them take tens of
                                            core-hours), run, and the share killed with its 95% interval
      scripts/mutation --summary            killed / survived / timeout / skipped per module of the runs so far
      scripts/mutation --show NAME          the diff of one mutant (`.venvs/mutation/bin/mutmut results` lists them)

    mutmut copies the project into mutants/ (git-ignored) and keeps its results there: a later run only tests mutants
    without a result (delete mutants/ to start afresh). Which tests may kill a mutant is set in pyproject.toml,
    [tool.mutmut]. Needs a Python 3.12; creates .venvs/mutation."""
    jobs, mode, names, modules, sample, seed = '2', 'run', [], [], 0, 1
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == '--jobs':
            jobs = rest.pop(0)
        elif arg in ('--sample', '--seed'):
            if not rest or not rest[0].isdigit():
                raise Fail(f'{arg} takes a number (see scripts/mutation --help)')
            if arg == '--sample':
                sample = int(rest.pop(0))
            else:
                seed = int(rest.pop(0))
        elif arg.startswith('--jobs='):
            jobs = arg.split('=', 1)[1]
        elif arg in ('--summary', '--show'):
            mode = arg[2:]
            if arg == '--show':
                names.append(rest.pop(0))
        elif arg in ('-h', '--help'):
            print(cmd_mutation.__doc__)
            return 0
        elif arg.startswith('-'):
            raise Fail(f'unknown option {arg} (see scripts/mutation --help)')
        else:
            if arg in MUTATED:
                modules.append(MUTATED[arg])
            names.append(
                f'datadog_checks.openai.{MUTATED[arg]}.*' if arg in MUTATED else f'datadog_checks.openai.{arg}'
            )
    if sample and len(modules) != len(names):
        raise Fail('--sample takes module names only (see scripts/mutation --help)')
    py = find_python('3.12')
    if py is None:
        raise Fail(not_found(['3.12']))
    venv = VENVS / 'mutation'
    requirements = [REPO / 'pyproject.toml', REPO / 'requirements-dev.txt', SCRIPTS / 'requirements-mutation.txt']
    install = ['-e', f'{REPO}[deps]', '-r', requirements[1], '-r', requirements[2]]
    ensure_venv(venv, py, requirements, install, f'Installing the check, its test requirements and mutmut into {venv}')
    mutmut = venv / 'bin' / 'mutmut'
    if mode == 'show':
        name = names[0] if names[0].startswith('datadog_checks.') else f'datadog_checks.openai.{names[0]}'
        return subprocess.call([mutmut, 'show', name], cwd=REPO)
    chosen = []
    if mode == 'run':
        started = time.monotonic()
        targets = names or [f'datadog_checks.openai.{m}.*' for m in MUTATED.values()]
        if sample:
            targets = chosen = mutation_sample(venv, modules or list(MUTATED.values()), sample, seed)
            (REPO / 'mutants').mkdir(exist_ok=True)
            (REPO / 'mutants' / 'sample.json').write_text(json.dumps({'seed': seed, 'mutants': chosen}))
        subprocess.call([mutmut, 'run', '--max-children', jobs, *targets], cwd=REPO)
        log('', f'Took {(time.monotonic() - started) / 60:.0f} min with {jobs} workers.')
    results = mutation_results(mutmut)
    print(mutation_summary(results))
    if chosen:
        print(sample_summary(results, chosen))
    return 0


COMMANDS = {
    'demo': cmd_demo,
    'test': cmd_test,
    'test-install': cmd_test_install,
    'sync': cmd_sync,
    'check-generated': cmd_check_generated,
    'mutation': cmd_mutation,
}


def main(argv: list) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `scripts/dev --help | head` ends quietly
    if not argv or argv[0] in ('-h', '--help'):
        print(__doc__.split('\nWhy not hatch')[0].strip())
        return 0
    if argv[0] not in COMMANDS:
        log(f'error: unknown command {argv[0]!r}; the commands are: {", ".join(COMMANDS)} (scripts/dev --help)')
        return 2
    command, args = COMMANDS[argv[0]], argv[1:]
    # scripts/demo --help belongs to run_check.py.
    if command is not cmd_demo and args and args[0] in ('-h', '--help'):
        print(f'scripts/dev {argv[0]}:\n    {command.__doc__.strip()}')
        return 0
    # The paths the commands take (scripts/test tests/test_config.py, scripts/demo -c conf.yaml) are the repository's.
    os.chdir(REPO)
    # On SIGTERM, as on Ctrl-C, the `finally` and `with` blocks stop the simulator and remove temporary folders.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return command(args)
    except Fail as e:
        log(f'error: {e}')
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
