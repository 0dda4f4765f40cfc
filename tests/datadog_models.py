"""Dashboards and monitors checked against Datadog's own typed API models (the `datadog-api-client` package).

`Dashboard` and `Monitor` of `datadog_api_client.v1.model` are generated from Datadog's OpenAPI description of
its API, so they know every key, widget type and enum value the API documents. Their deserializer is lenient by
design, to keep a client working when the API grows, and accepts silently what a hand-written file gets wrong:

- a key the model does not define (`titel`, or a key of another widget) is kept as an "additional property";
- a value outside an enum (`"display_type": "bar"`) is kept, and its object is marked unparsed;
- a widget definition that matches none of the widget types (an unknown `type`, or a known type whose content
  is wrong) becomes an `UnparsedObject` holding the raw dict; so does a list item that fails to build.

This module runs that deserializer as the client does on an API response, then walks what it built next to the
JSON it came from, and reports as a `Problem`, with the JSON path of the value
(`$.widgets[2].definition.requests[0].display_type`):

- each unknown key (with the closest known key when one is near: a misspelling), unknown widget type (or
  formula `data_source`) and unknown enum value;
- each value the deserializer refuses (a wrong type, a required key missing, an empty list that must not be),
  or lets through unchecked (null where the schema has no null); after a refusal the rest is read without that
  value, so that one mistake does not hide the others.

Where the client gave up on a whole object (an `UnparsedObject`, or a `oneOf` none of whose schemas matched), the
walker builds that object again as the schema its `type` names, or as each schema of the `oneOf`, and walks
that, to name the value inside that is wrong rather than the widget around it.

A test dependency only: the check never imports it, and the wheel does not ship it (tests/test_packaging.py).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from datadog_api_client.configuration import Configuration
from datadog_api_client.model_utils import (
    ModelComposed,
    ModelNormal,
    ModelSimple,
    OpenApiModel,
    UnparsedObject,
    allows_single_value_input,
    is_type_nullable,
    validate_and_convert_types,
)
from datadog_api_client.v1.model.dashboard import Dashboard
from datadog_api_client.v1.model.monitor import Monitor

__all__ = [
    'Problem',
    'dashboard_problems',
    'format_path',
    'model_problems',
    'monitor_problems',
    'recommended_monitor_problems',
]

Path = tuple  # of str keys and int indices, from the document's root
MISSING = object()

# An integration's recommended monitor (assets/monitors/*.json, "version 2" as integrations-core has them) wraps
# the monitor the API creates in fields the integrations pipeline reads; `definition` is that monitor.
RECOMMENDED_MONITOR_FIELDS = {
    'version': int,
    'created_at': str,
    'last_updated_at': str,
    'title': str,
    'description': str,
    'definition': dict,
    'tags': list,
}


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str

    def __str__(self) -> str:
        return f'{format_path(self.path)}: {self.message}'


def format_path(path: Path) -> str:
    """`$.widgets[0].definition["odd key"]`: JSONPath, keys in brackets only when they are not identifiers."""
    out = ['$']
    for part in path:
        if isinstance(part, int):
            out.append(f'[{part}]')
        elif re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*', part):
            out.append(f'.{part}')
        else:
            out.append('[' + repr(part).replace("'", '"') + ']')
    return ''.join(out)


def dashboard_problems(data: Any) -> list[Problem]:
    """What is wrong with a dashboard's JSON (as POST /api/v1/dashboard takes it), as Datadog's model reads it."""
    return model_problems(data, Dashboard)


def monitor_problems(data: Any) -> list[Problem]:
    """What is wrong with a monitor's JSON (as POST /api/v1/monitor takes it), as Datadog's model reads it."""
    return model_problems(data, Monitor)


def recommended_monitor_problems(data: Any) -> list[Problem]:
    """A recommended monitor asset: its wrapper's fields (exactly those of RECOMMENDED_MONITOR_FIELDS, of their
    types; datadog-api-client has no model of the wrapper) and its `definition` as a `Monitor`."""
    if not isinstance(data, dict):
        return [Problem((), f'must be an object (a recommended monitor), not {_json_type(data)}')]
    problems = []
    for key, value in data.items():
        expected = RECOMMENDED_MONITOR_FIELDS.get(key)
        if expected is None:
            problems.append(Problem((key,), _unknown_key(key, 'a recommended monitor', RECOMMENDED_MONITOR_FIELDS)))
        elif type(value) is not expected:
            problems.append(Problem((key,), f'must be {_json_type(expected())}, not {_json_type(value)}'))
    for key in RECOMMENDED_MONITOR_FIELDS.keys() - data.keys():
        problems.append(Problem((), f'missing required key {key!r}'))
    if isinstance(data.get('tags'), list):
        problems += [
            Problem(('tags', i), f'must be a string, not {_json_type(t)}')
            for i, t in enumerate(data['tags'])
            if type(t) is not str
        ]
    if isinstance(data.get('definition'), dict):
        problems += [Problem(('definition', *p.path), p.message) for p in monitor_problems(data['definition'])]
    return sorted(problems, key=_order)


def model_problems(data: Any, model: type[OpenApiModel]) -> list[Problem]:
    """Deserialize `data` into `model` as the client deserializes an API response, then report everything the
    deserializer accepted silently or refused, each with its JSON path."""
    problems = _build_and_walk(data, model, ())
    # One problem per path and message: a oneOf tried schema by schema can reach the same value twice.
    return sorted(set(problems), key=_order)


# -- building ------------------------------------------------------------------------------------------------


def _configuration() -> Configuration:
    # The client's defaults (ApiClient.deserialize passes its Configuration the same way).
    return Configuration()


def _build(data: Any, model: type[OpenApiModel], path: Path) -> Any:
    """The model instance the client builds from `data`; raises what the client raises."""
    # Arguments as in ApiClient.deserialize: JSON key names (spec_property_naming) and type checks on.
    return validate_and_convert_types(data, (model,), list(path), True, True, configuration=_configuration())


def _build_and_walk(data: Any, model: type[OpenApiModel], path: Path) -> list[Problem]:
    shape = _shape_problems(data, model, path)
    if shape:
        return shape
    # The client stops at the first value it refuses: report it, then build again without it, until the rest
    # builds (each round drops a new key, so this ends), and walk that.
    problems, current, dropped = [], data, set()
    while True:
        try:
            parsed = _build(current, model, path)
            break
        except Exception as e:  # noqa: BLE001 - the deserializer's own errors are findings, reported with their path
            found, drop = _failure(e, data, current, model, path, dropped)
            problems += found
            drop = [d for d in drop if d not in dropped]
            if not drop:
                return problems
            dropped.update(drop)
            current = _without(current, drop)
    if isinstance(parsed, UnparsedObject) or (isinstance(parsed, ModelComposed) and _unparsed_composed(parsed)):
        if isinstance(parsed, ModelComposed) or issubclass(model, ModelComposed):
            return problems + _diagnose_composed(current, model, path)
        return problems + [Problem(path, f'is not a valid {model.__name__}')]
    return problems + _walk(parsed, current, (model,), path)


def _failure(
    e: Exception, original: Any, data: Any, model: type, path: Path, dropped: set
) -> tuple[list[Problem], list[Path]]:
    """The problems behind a failed build of `data` (`original` without the `dropped` values), and the keys
    (paths relative to `data`) to build again without."""
    problem = _from_exception(e, path, model)
    relative = problem.path[len(path) :] if problem.path[: len(path)] == path else ()
    if relative:
        if isinstance(relative[-1], str) and _has(data, relative):  # not a list item: the others would move
            return [problem], [relative]
        return [problem], []
    if not issubclass(model, ModelNormal) or not isinstance(data, dict):
        return [problem], []
    # An error without a place: a required key missing, here or in an object below (whose constructor's
    # TypeError reaches us). Build each object-valued field alone, as the file has it, to find which.
    inner = _field_problems(original, model, path)
    if inner:
        return [p for found in inner.values() for p in found], [(key,) for key in inner]
    missing = _missing_keys(e, model)
    if missing is not None and {(k,) for k in missing} <= dropped:
        return [], []  # required keys the rounds before dropped for a bad value: already reported
    # Here, then: a misspelled key is the likely reason.
    known = set(model.attribute_map.values())
    return [problem] + [Problem((*path, k), _unknown_key(k, model.__name__, known)) for k in data if k not in known], []


def _has(data: Any, relative: Path) -> bool:
    for part in relative:
        if isinstance(part, str) and isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(part, int) and isinstance(data, list) and 0 <= part < len(data):
            data = data[part]
        else:
            return False
    return True


def _without(data: Any, drop: list[Path]) -> Any:
    """A copy of `data` without the values at the `drop` paths (each ending with an object's key)."""
    for relative in drop:
        data = _without_one(data, relative)
    return data


def _without_one(data: Any, relative: Path) -> Any:
    head, *rest = relative
    if isinstance(data, dict):
        if not rest:
            return {k: v for k, v in data.items() if k != head}
        return {k: (_without_one(v, tuple(rest)) if k == head else v) for k, v in data.items()}
    return [(_without_one(v, tuple(rest)) if i == head else v) for i, v in enumerate(data)]


def _shape_problems(data: Any, model: type[OpenApiModel], path: Path) -> list[Problem]:
    """An object where the schema has one, and in its lists of objects: the client fails on these with a Python
    error that names neither the value nor its place."""
    if not _wants_object(model):
        return []
    if not isinstance(data, dict):
        return [Problem(path, f'must be an object ({model.__name__}), not {_json_type(data)}')]
    if not issubclass(model, ModelNormal):
        return []
    problems = []
    names = {json_key: name for name, json_key in model.attribute_map.items()}
    for key, value in data.items():
        declared = model.openapi_types.get(names.get(key, key), ())
        items = _list_item_types(declared)
        if isinstance(value, list) and items and all(_wants_object(t) for t in items):
            problems += [
                Problem((*path, key, i), f'must be an object ({_names(items)}), not {_json_type(item)}')
                for i, item in enumerate(value)
                if not isinstance(item, dict)
            ]
    return problems


def _field_problems(data: dict, model: type[ModelNormal], path: Path) -> dict[str, list[Problem]]:
    names = {json_key: name for name, json_key in model.attribute_map.items()}
    problems = {}
    for key, value in data.items():
        declared = model.openapi_types.get(names.get(key, key), ())
        if isinstance(value, dict):
            found = [p for t in declared if _wants_object(t) for p in _build_and_walk(value, t, (*path, key))]
            if found:
                problems[key] = found
    return problems


def _wants_object(t: Any) -> bool:
    return (
        isinstance(t, type)
        and issubclass(t, (ModelNormal, ModelComposed))
        and not (issubclass(t, ModelComposed) and allows_single_value_input(t))
    )


def _json_type(value: Any) -> str:
    names = {dict: 'an object', list: 'an array', str: 'a string', bool: 'a boolean', type(None): 'null'}
    return names.get(type(value), 'a number' if isinstance(value, (int, float)) else type(value).__name__)


_MISSING = re.compile(r"(\w+)\.__init__\(\) missing \d+ required (?:positional|keyword-only) arguments?: (.+)$")


def _missing_keys(e: Exception, model: type) -> list[str] | None:
    """The JSON keys `model`'s constructor says are missing, if that is the error."""
    missing = _MISSING.search(str(e.args[0]) if e.args else '')
    if not missing or missing[1] != model.__name__ or not issubclass(model, ModelNormal):
        return None
    return [model.attribute_map.get(n, n) for n in re.findall(r"'([^']+)'", missing[2])]


def _from_exception(e: Exception, path: Path, model: type) -> Problem:
    where = tuple(getattr(e, 'path_to_item', None) or path)
    message = str(e.args[0]) if e.args else type(e).__name__
    # The client's messages end with its own rendering of the path: ours comes first instead.
    message = re.sub(r" at (\['[^']*'\]|\[\d+\])+$", '', message)
    invalid = re.match(r"Invalid value for `(\w+)`", message)
    if invalid and where == path and issubclass(model, ModelNormal):  # a validation (min_items...) of a field
        where = (*path, model.attribute_map.get(invalid[1], invalid[1]))
    unknown = re.fullmatch(r"(\w+) has no attribute '([^']*)'", message)
    if unknown:  # a model that takes no additional properties
        return Problem(where, _unknown_key(unknown[2], unknown[1], ()))
    missing = _MISSING.search(message)
    if missing:
        keys = _missing_keys(e, model) or re.findall(r"'([^']+)'", missing[2])
        return Problem(where, f'{missing[1]} lacks required key(s): {", ".join(keys)}')
    return Problem(where, message)


# -- walking what the client built -----------------------------------------------------------------------------


def _walk(value: Any, raw: Any, declared: tuple, path: Path) -> list[Problem]:
    """`value` as the client built it from `raw`, where the schema declares one of the types in `declared`."""
    if value is None:
        # The client skips the type check of a null value, whatever the schema says.
        if any(isinstance(t, type) and is_type_nullable(t) for t in declared):
            return []
        return [Problem(path, f'null where the schema allows only {_names(declared)}')]
    if isinstance(value, UnparsedObject):
        return _diagnose(raw, declared, path)
    if isinstance(value, ModelComposed):
        if _unparsed_composed(value):
            return _diagnose_composed(raw, type(value), path)
        instance = value.get_oneof_instance()
        return _walk(instance, raw, (type(instance),), path)
    if isinstance(value, ModelSimple):
        if value._unparsed:
            return [Problem(path, _bad_enum(value))]
        return []
    if isinstance(value, ModelNormal):
        return _walk_object(value, raw, path)
    if isinstance(value, list):
        item_types = _list_item_types(declared)
        raws = raw if isinstance(raw, list) and len(raw) == len(value) else [MISSING] * len(value)
        return [p for i, (v, r) in enumerate(zip(value, raws)) for p in _walk(v, r, item_types, (*path, i))]
    if isinstance(value, dict):
        value_types = _dict_value_types(declared)
        if value_types is None:  # a free-form object (an additional property's value): nothing declared inside
            return []
        raws = raw if isinstance(raw, dict) else {}
        return [p for k, v in value.items() for p in _walk(v, raws.get(k, MISSING), value_types, (*path, k))]
    return []


def _walk_object(value: ModelNormal, raw: Any, path: Path) -> list[Problem]:
    problems = []
    cls = type(value)
    declared = cls.openapi_types
    raws = raw if isinstance(raw, dict) else {}
    for name, child in value._data_store.items():
        key = cls.attribute_map.get(name, name)
        if name not in declared:
            problems.append(Problem((*path, key), _unknown_key(key, cls.__name__, cls.attribute_map.values())))
            continue
        problems += _walk(child, raws.get(key, MISSING), declared[name], (*path, key))
    return problems


def _unparsed_composed(value: ModelComposed) -> bool:
    instances = value._composed_instances
    return not instances or isinstance(instances[0], UnparsedObject) or value._unparsed


# -- finding what is wrong inside an object the client could not read -----------------------------------------


def _diagnose(raw: Any, declared: tuple, path: Path) -> list[Problem]:
    models = [t for t in declared if isinstance(t, type) and issubclass(t, OpenApiModel)]
    if raw is MISSING or not models:
        return [Problem(path, f'the client could not read this value as {_names(declared)}')]
    if len(models) == 1:
        model = models[0]
        if issubclass(model, ModelComposed):
            return _diagnose_composed(raw, model, path)
        return _build_and_walk(raw, model, path)
    return _closest(raw, models, path, _names(declared))


def _diagnose_composed(raw: Any, model: type[ModelComposed], path: Path) -> list[Problem]:
    """`raw` matched none (or several) of the oneOf schemas of `model`: say which value is wrong."""
    schemas = [s for s in model._composed_schemas.get('oneOf', ()) if isinstance(s, type)]
    if isinstance(raw, dict):
        for key in DISCRIMINATORS:
            by_value = _schemas_by(key, schemas)
            if by_value is None:
                continue
            value = raw.get(key, MISSING)
            if value is MISSING:
                known = {k for s in schemas if issubclass(s, ModelNormal) for k in s.attribute_map.values()}
                return [Problem(path, f'lacks the `{key}` that says which {model.__name__} it is')] + [
                    Problem((*path, k), _unknown_key(k, model.__name__, known)) for k in raw if k not in known
                ]
            if value not in by_value:
                known = ', '.join(sorted(map(str, by_value)))
                return [Problem((*path, key), f'unknown {model.__name__} {key} {value!r} (known: {known})')]
            return _closest(raw, by_value[value], path, model.__name__)
    return _closest(raw, schemas, path, model.__name__)


def _closest(raw: Any, schemas: list[type], path: Path, what: str) -> list[Problem]:
    attempts = {schema: _build_and_walk(raw, schema, path) for schema in schemas}
    clean = [s.__name__ for s, problems in attempts.items() if not problems]
    if len(clean) > 1:
        return [Problem(path, f'matches several schemas of {what} ({", ".join(clean)}): the client cannot tell')]
    if clean:
        return [Problem(path, f'read alone as {clean[0]}, but the client could not read it as {what}')]
    # The schema it is closest to (the fewest problems) names what to fix; the others are noise.
    best = min(attempts, key=lambda s: len(attempts[s]))
    if len(attempts) == 1:
        return attempts[best]
    note = f' (read as {best.__name__}, the closest of {len(attempts)} schemas of {what})'
    return [Problem(p.path, p.message + note) for p in attempts[best]]


# The keys whose enum value says which schema of a oneOf an object is: `type` for widget definitions,
# `data_source` for formula queries.
DISCRIMINATORS = ('type', 'data_source')


def _schemas_by(key: str, schemas: list[type]) -> dict[Any, list[type]] | None:
    """The oneOf schemas by their enum value of `key`, when each schema has one (two funnel widgets share one)."""
    out = {}
    for schema in schemas:
        values = _enum_values(key, schema)
        if not values:
            return None
        for value in values:
            out.setdefault(value, []).append(schema)
    return out


def _enum_values(key: str, schema: type) -> set | None:
    if issubclass(schema, ModelComposed):  # a oneOf of its own (the topology map's): the union of its values
        nested = [_enum_values(key, s) for s in schema._composed_schemas.get('oneOf', ()) if isinstance(s, type)]
        return set().union(*nested) if nested and all(nested) else None
    types = getattr(schema, 'openapi_types', {}).get(key, ())
    enums = [t for t in types if isinstance(t, type) and issubclass(t, ModelSimple) and t.allowed_values]
    return set(enums[0].allowed_values) if enums else None


# -- messages ----------------------------------------------------------------------------------------------------


def _unknown_key(key: str, where: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.7)
    hint = f' (did you mean {close[0]!r}?)' if close else ''
    return f'unknown key {key!r} in {where}{hint}'


def _bad_enum(value: ModelSimple) -> str:
    cls = type(value)
    allowed = ', '.join(repr(v) for v in sorted(cls.allowed_values, key=str))
    return f'{value.value!r} is not a {cls.__name__} value (one of {allowed})'


def _names(declared: tuple) -> str:
    return ' or '.join(getattr(t, '__name__', repr(t)) for t in declared)


def _list_item_types(declared: tuple) -> tuple:
    for t in declared:
        if isinstance(t, list):
            return tuple(t)
    return ()


def _dict_value_types(declared: tuple) -> tuple | None:
    for t in declared:
        if isinstance(t, dict):
            (value_types,) = t.values()
            return value_types
    return None


def _order(problem: Problem) -> tuple:
    return tuple((0, p, '') if isinstance(p, int) else (1, 0, p) for p in problem.path), problem.message
