"""The checks `scripts/test-install` runs inside the Agent-like venv (.venvs/agent-py3.X), with that venv's
`python -I` from a folder outside the repository, so nothing but the installed wheel can be imported:

    installed WHEEL REPO CONFD   what the wheel installed, what the Agent copies to conf.d, what importing it loads
    run URL KEY REPO             two check runs against the simulator at URL, and what they submitted

Every module loaded must come from the standard library or the venv's site-packages (this file, `__main__`, aside).
"""

import importlib.metadata
import importlib.util
import re
import shutil
import sys
import sysconfig
import time
from pathlib import Path

DIST = 'datadog-openai'
PACKAGE_DIR = 'datadog_checks/openai/'
EXAMPLE = 'datadog_checks/openai/data/conf.yaml.example'


def fail(msg):
    sys.exit(f'FAIL: {msg}')


def audit_modules(repo: Path) -> int:
    """Every loaded module comes from the standard library or this venv's site-packages, never the repo's sources
    (the venv itself lives in the repo, under .venvs/)."""
    paths = sysconfig.get_paths()
    allowed = [Path(paths[k]).resolve() for k in ('stdlib', 'platstdlib', 'purelib', 'platlib')]
    outside, from_repo = [], []
    for name, module in sorted(sys.modules.items()):
        file = getattr(module, '__file__', None)
        if not file or name == '__main__':  # this script
            continue
        path = Path(file).resolve()
        if any(path.is_relative_to(a) for a in allowed):
            continue
        (from_repo if path.is_relative_to(repo) else outside).append(f'{name} ({path})')
    if from_repo:
        fail(f'modules imported from the repository instead of the wheel: {from_repo}')
    if outside:
        fail(f'modules imported from outside the stdlib and the venv: {outside}')
    for forbidden in ('openai', 'tests'):
        if forbidden in sys.modules:
            fail(f'`{forbidden}` was imported: the Agent does not ship it')
    import datadog_checks.openai as pkg

    purelib = Path(paths['purelib']).resolve()
    if not Path(pkg.__file__).resolve().is_relative_to(purelib):
        fail(f'datadog_checks.openai comes from {pkg.__file__}, not from {purelib}')
    return len(sys.modules)


def installed(wheel, repo, confd):
    repo = Path(repo).resolve()
    dist = importlib.metadata.distribution(DIST)
    wheel_version = Path(wheel).name.split('-')[1]
    if dist.version != wheel_version:
        fail(f'{DIST} {dist.version} is installed, not the wheel\'s {wheel_version}')
    files = [str(f) for f in dist.files or []]
    dist_info = f'{dist.metadata["Name"].replace("-", "_")}-{dist.version}.dist-info/'
    stray = [f for f in files if not (f.startswith(PACKAGE_DIR) or f.startswith(dist_info))]
    if stray:
        fail(f'the wheel installs files outside {PACKAGE_DIR}: {stray}')
    if EXAMPLE not in files or not Path(dist.locate_file(EXAMPLE)).is_file():
        fail(f'{EXAMPLE} is not in the installed package')
    if importlib.util.find_spec('tests') is not None:
        fail(f'a `tests` package is importable from the venv: {importlib.util.find_spec("tests").origin}')
    # `datadog-agent integration install -w` refuses wheels without this requirement; anything else it would not
    # install (--no-deps), so the check could not import it.
    requires = dist.requires or []
    if not any(re.match(r'datadog-checks-base(?![\w.-])', r) for r in requires):
        fail(f'{DIST} does not require datadog-checks-base: the Agent refuses it as "not an agent check"')
    others = [r for r in requires if not re.match(r'datadog-checks-base(?![\w.-])', r)]
    if others:
        fail(f'{DIST} requires more than datadog-checks-base, which `integration install` never installs: {others}')
    site = Path(sysconfig.get_paths()['purelib'])
    for pth in site.glob('*.pth'):
        if str(repo) in pth.read_text(errors='replace'):
            fail(f'{pth} points into the repository (an editable install)')
    # What the Agent then does: copy <site-packages>/datadog_checks/openai/data/*.yaml* to conf.d/openai.d/.
    data = Path(dist.locate_file(EXAMPLE)).parent
    dest = Path(confd) / 'openai.d'
    dest.mkdir(parents=True, exist_ok=True)
    for f in data.iterdir():
        if f.is_file() and re.search(r'[\w_]+\.yaml.*', f.name):
            shutil.copyfile(f, dest / f.name)
    import yaml

    example = yaml.safe_load((dest / 'conf.yaml.example').read_text())
    if not isinstance(example, dict) or 'instances' not in example:
        fail('conf.d/openai.d/conf.yaml.example has no `instances:`')

    try:
        from datadog_checks.openai import OpenAICheck  # noqa: F401
    except ModuleNotFoundError as e:
        fail(f'importing datadog_checks.openai needs `{e.name}`, which the Agent does not ship ({e})')

    n = audit_modules(repo)
    print(
        f'{DIST} {dist.version}: installs only {PACKAGE_DIR}, conf.yaml.example in place, imports {n} modules, '
        'all shipped'
    )


def run(url, key, repo):
    repo = Path(repo).resolve()
    from datadog_checks.base import AgentCheck
    from datadog_checks.base.stubs import aggregator

    from datadog_checks.openai import OpenAICheck

    instance = {'account_name': 'install-test', 'admin_api_key': key, 'api_base_url': url}
    instance['min_collection_interval'] = 300
    # An option the config models treat as secure (a proxy's CA is a common one): its validation differs between
    # the bases the check supports. The simulator is plain http, so the bundle is loaded but never used.
    import certifi

    instance['tls_ca_cert'] = certifi.where()
    check = OpenAICheck('openai', {}, [instance])
    for i in (1, 2):
        if i == 2:
            # The simulator runs 300x faster than the wall clock: one second later is the next run,
            # five minutes on, so the check neither skips the run nor finds the traffic unchanged.
            time.sleep(1)
            check.clock = lambda: time.time() + 300
        error = check.run()
        if error != '':
            fail(f'run {i} returned an error: {error}')
    aggregator.assert_service_check('openai.can_connect', AgentCheck.OK)
    names = set(aggregator.metric_names)
    if 'openai.check.can_connect' not in names:
        fail(f'openai.check.can_connect was not submitted; got {sorted(names)}')
    usage = sorted(n for n in names if n.startswith('openai.api.usage.'))
    if 'openai.api.usage.completions.input_tokens' not in usage:
        fail(f'the second run submitted no completions tokens (counts of the growth since the first); got {usage}')
    audit_modules(repo)
    more = ' ...' * (len(usage) > 3)
    print(f'2 runs OK, openai.can_connect OK, {len(names)} metrics incl. {", ".join(usage[:3])}{more}')


if __name__ == '__main__':
    command, *args = sys.argv[1:]
    {'installed': installed, 'run': run}[command](*args)
