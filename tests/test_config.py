"""Bad configuration fails at load time, with one clear message per problem."""

from types import SimpleNamespace

import pytest
from datadog_checks.base import ConfigurationError

from datadog_checks.openai import OpenAICheck
from datadog_checks.openai.catalogue import ENDPOINTS_BY_NAME, USAGE_ENDPOINTS
from tests.conftest import DEFAULT_GROUP_BY

GOOD = {'account_name': 'prod', 'admin_api_key': 'sk-admin-abc', 'min_collection_interval': 300}


def load(**overrides):
    instance = {**GOOD, **overrides}
    instance = {k: v for k, v in instance.items() if v is not None}
    check = OpenAICheck('openai', {}, [instance])
    check.load_configuration_models()
    check.build()
    check.settings = effective(check)
    return check


def effective(check) -> SimpleNamespace:
    """What the configuration made of the check: the sources it reads, with their group_by, and its options."""
    return SimpleNamespace(
        endpoints=tuple(s.name for s in check.sources if not s.derived),
        group_by={s.name: s.group_by for s in check.sources if not s.derived},
        bucket_width=check.config.bucket_width,
        api_base_url=check.config.api_base_url,
        resolve_user_emails=check.config.resolve_user_emails,
        admin_api_key=check.config.admin_api_key,
    )


def problems(**overrides) -> str:
    with pytest.raises(ConfigurationError) as e:
        load(**overrides)
    return str(e.value)


def test_defaults_collect_every_endpoint_with_the_catalogue_group_bys():
    settings = load().settings
    assert settings.endpoints == USAGE_ENDPOINTS + ('costs',)
    assert settings.group_by == {name: ENDPOINTS_BY_NAME[name].default_group_by for name in settings.endpoints}
    assert settings.bucket_width == '1h'
    assert settings.api_base_url == 'https://api.openai.com/v1'
    assert not settings.resolve_user_emails


# What the price of each endpoint's usage depends on: the default splits by these and by nothing else (the
# tests' own table, written out in conftest.py).
PRICED_BY = DEFAULT_GROUP_BY


def test_the_default_group_by_is_cheap_users_and_keys_are_opt_in():
    settings = load().settings
    assert dict(settings.group_by) == PRICED_BY
    for name, dims in settings.group_by.items():
        assert not {'user_id', 'api_key_id', 'vector_store_id'} & set(dims), name


def test_the_defaults_are_in_the_order_an_explicit_group_by_gets():
    # Writing the default out in conf.yaml must not change the ledger's shape (that would re-baseline).
    defaults = load().settings.group_by
    explicit = load(group_by={name: list(reversed(dims)) for name, dims in defaults.items()}).settings.group_by
    assert explicit == defaults


def test_per_user_and_per_key_splits_can_be_asked_for():
    settings = load(group_by={'completions': ['project_id', 'user_id', 'api_key_id', 'model']}).settings
    assert settings.group_by['completions'] == ('project_id', 'user_id', 'api_key_id', 'model')
    assert settings.group_by['embeddings'] == ('project_id', 'model')  # the others keep their defaults


def test_group_by_is_validated_against_what_each_endpoint_accepts():
    message = problems(group_by={'vector_stores': ['project_id', 'model'], 'file_search_calls': ['model']})
    assert '`group_by.vector_stores` has model' in message
    assert 'allowed: project_id.' in message
    assert '`group_by.file_search_calls` has model' in message
    assert 'allowed: project_id, user_id, api_key_id, vector_store_id' in message
    # One line per problem.
    assert len(message.splitlines()) == 2


def test_group_by_order_does_not_matter():
    settings = load(group_by={'completions': ['model', 'project_id']}).settings
    assert settings.group_by['completions'] == ('project_id', 'model')


def test_unknown_endpoints_are_named_with_the_allowed_ones():
    message = problems(usage_endpoints=['completions', 'chat'], group_by={'chats': ['model']})
    assert 'unknown endpoints chat' in message and 'web_search_calls' in message
    assert "unknown endpoint 'chats'" in message


def test_a_project_key_is_refused_with_what_to_do():
    message = problems(admin_api_key='sk-proj-123')
    assert 'organization admin key' in message and 'admin-keys' in message


def test_missing_account_and_key_are_reported():
    assert 'account_name' in problems(account_name=None)
    assert '`account_name` is required' in problems(account_name='  ')
    assert '`admin_api_key` is required' in problems(admin_api_key=None)


def test_an_auth_token_reader_replaces_the_key(tmp_path):
    key_file = tmp_path / 'key'
    key_file.write_text('sk-admin-from-file')
    auth_token = {
        'reader': {'type': 'file', 'path': str(key_file)},
        'writer': {'type': 'header', 'name': 'Authorization', 'value': 'Bearer <TOKEN>'},
    }
    assert load(admin_api_key=None, auth_token=auth_token).settings.admin_api_key is None


def test_windows_and_budget_are_checked():
    message = problems(bucket_width='5m', revision_window_hours=0, max_catch_up_hours=100000, time_budget=400)
    assert '`bucket_width` must be one of 1m, 1h, 1d' in message
    assert '`revision_window_hours` must be at least 1' in message
    assert '`max_catch_up_hours` must be between' in message
    assert '`time_budget` (400s) must be shorter than `min_collection_interval` (300s)' in message


@pytest.mark.parametrize('account_name', ['  ', None])
def test_a_wrong_account_name_does_not_hide_the_other_options_problems(account_name):
    # Judged together only once each option is valid: the others are judged again without the wrong ones.
    message = problems(account_name=account_name, time_budget=400)
    assert 'account_name' in message
    assert '`time_budget` (400s) must be shorter than `min_collection_interval` (300s)' in message


def test_a_daily_bucket_needs_a_day_of_revision_window():
    assert 'use 24 or more with 1d' in problems(bucket_width='1d', revision_window_hours=6)
    assert load(bucket_width='1d', revision_window_hours=24).settings.bucket_width == '1d'


def test_costs_can_be_turned_off():
    settings = load(collect_costs=False, usage_endpoints=['completions']).settings
    assert settings.endpoints == ('completions',)


def test_the_key_is_a_registered_secret_and_sent_as_bearer():
    check = load(admin_api_key='sk-admin-very-secret')
    assert check.http.options['headers']['Authorization'] == 'Bearer sk-admin-very-secret'
    assert 'sk-admin-very-secret' not in check.sanitize('error with sk-admin-very-secret inside')


def test_state_is_keyed_by_account_not_by_key():
    one = load(admin_api_key='sk-admin-one')
    two = load(admin_api_key='sk-admin-two', tags=['team:ml'])
    other = load(account_name='staging')
    assert one.persistent_cache_id() == two.persistent_cache_id() != other.persistent_cache_id()


def test_prices_name_known_kinds_and_non_negative_numbers():
    message = problems(prices={'gpt-4o': {'inputs': 2.5, 'output': -1, 'batch_output': 'cheap'}, 'o3': 3})
    assert '`prices.gpt-4o.inputs` is not a kind of price; use one of input, cached_input, output' in message
    assert '`prices.gpt-4o.output` must be a number of dollars per million, 0 or more.' in message
    assert '`prices.gpt-4o.batch_output` must be a number' in message
    assert '`prices.o3` must map kinds' in message
    check = load(estimate_spend=True, prices={'gpt-4o': {'input': 2.5, 'priority_output': 20}})
    [estimates] = [s for s in check.sources if s.derived]
    assert estimates.configured == {('', 'gpt-4o', 'input'): 2.5e-6, ('priority', 'gpt-4o', 'output'): 20e-6}


def test_the_estimate_needs_the_bill_or_prices():
    options = dict(estimate_spend=True, collect_costs=False, usage_endpoints=['completions'])
    assert not [s for s in load(**options).sources if s.derived]
    assert not [s for s in load(estimate_spend=False).sources if s.derived]
    assert [s.name for s in load(estimate_spend=True).sources if s.derived] == ['estimates']
    # Opt-in: it more than doubles the points of a run (README, Estimated spend).
    assert not [s for s in load().sources if s.derived]
