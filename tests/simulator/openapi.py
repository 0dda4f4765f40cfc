"""OpenAI's published OpenAPI description (the extract kept in `data/`), as a validator.

The simulator checks every request against it the way OpenAI's API front end does (unknown
parameter, wrong type, value outside an enum, missing required parameter: a 400 with OpenAI's error
shape), and the tests check every 200 body the simulator sends against the response schemas. A
simulator that drifted from the published API would otherwise let the check drift with it.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# The extract of OpenAI's openapi.yaml the simulator and the tests follow. Its header names the source
# repository and commit; the repository carries it, so a clone needs nothing beside it.
SPEC_PATH = Path(__file__).resolve().parent / 'data' / 'openapi-admin-extract.yaml'
SPEC_URI = 'urn:openai:openapi-admin-extract'


def default_spec_path() -> Path:
    return SPEC_PATH


class RequestError(Exception):
    """A request the spec rejects: rendered by the server as a 400 in OpenAI's error shape."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status

    def body(self) -> dict:
        return {
            'error': {'message': self.message, 'type': 'invalid_request_error', 'param': self.param, 'code': self.code}
        }


@dataclass
class Operation:
    method: str
    template: str
    regex: re.Pattern
    spec: dict
    parameters: dict[str, dict] = field(default_factory=dict)

    @property
    def query_parameters(self) -> dict[str, dict]:
        return {n: p for n, p in self.parameters.items() if p.get('in') == 'query'}


@dataclass
class ValidRequest:
    operation: Operation
    path_params: dict[str, str]
    # Query parameters coerced to their schema types, defaults applied.
    params: dict[str, Any]


def _strip(node: Any) -> Any:
    """The spec without OpenAPI-only keywords that JSON Schema would misread or that are noise."""
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != 'discriminator' and not k.startswith('x-')}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _quote_list(values) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return ' and '.join(quoted)
    return ', '.join(quoted[:-1]) + ', and ' + quoted[-1]


_TYPE_WORDS = {
    'integer': 'an integer',
    'number': 'a number',
    'boolean': 'a boolean',
    'string': 'a string',
    'array': 'an array',
}


class OpenAPISpec:
    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_spec_path()
        with open(self.path) as f:
            self.document = yaml.safe_load(f)
        servers = self.document.get('servers') or [{'url': ''}]
        # '/v1' of https://api.openai.com/v1: request paths carry it, spec paths do not.
        self.base_path = urlsplit(servers[0]['url']).path.rstrip('/')
        self.schema_document = _strip(self.document)
        self.registry = Registry().with_resource(
            SPEC_URI, Resource.from_contents(self.schema_document, default_specification=DRAFT202012)
        )
        self.operations: list[Operation] = []
        for template, item in (self.document.get('paths') or {}).items():
            shared = item.get('parameters') or []
            for method, spec in item.items():
                if method not in ('get', 'post', 'put', 'patch', 'delete'):
                    continue
                regex = re.compile('^' + re.sub(r'\\\{(\w+)\\\}', r'(?P<\1>[^/]+)', re.escape(template)) + '$')
                params = {}
                for p in [*shared, *(spec.get('parameters') or [])]:
                    p = self._resolve(p)
                    params[p['name']] = p
                self.operations.append(Operation(method.upper(), template, regex, spec, params))
        self._validators: dict[tuple, Draft202012Validator] = {}

    # -- lookups -----------------------------------------------------------------------------------

    def _resolve(self, node: dict) -> dict:
        while isinstance(node, dict) and '$ref' in node:
            node = self._pointer(node['$ref'])
        return node

    def _pointer(self, ref: str) -> Any:
        if not ref.startswith('#/'):
            raise ValueError(f'only local references are supported, not {ref!r}')
        node: Any = self.document
        for part in ref[2:].split('/'):
            node = node[part.replace('~1', '/').replace('~0', '~')]
        return node

    def spec_path(self, path: str) -> str:
        """A request path or URL without the server's base path ('/v1') and query string."""
        path = urlsplit(path).path
        if self.base_path and (path == self.base_path or path.startswith(self.base_path + '/')):
            path = path[len(self.base_path) :]
        return path or '/'

    def find(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        path = self.spec_path(path)
        for op in self.operations:
            if op.method != method.upper():
                continue
            m = op.regex.match(path)
            if m:
                return op, m.groupdict()
        return None

    def operation(self, method: str, path: str) -> Operation:
        found = self.find(method, path)
        if found is None:
            raise KeyError(f'{method} {path} is not in the spec')
        return found[0]

    def limit_rules(self, path: str) -> dict[str, tuple[int, int | None]]:
        """{bucket_width: (default limit, max limit)} as the spec states them for a usage/costs path.

        Usage endpoints spell them out in the `limit` description per width; costs gives a schema
        default and "between 1 and N" in prose.
        """
        op = self.operation('GET', path)
        limit = op.parameters.get('limit') or {}
        text = limit.get('description') or ''
        rules = {
            width: (int(default), int(maximum))
            for width, default, maximum in re.findall(r'bucket_width=(\w+)`?: default: (\d+), max: (\d+)', text)
        }
        if not rules:
            default = (limit.get('schema') or {}).get('default')
            maximum = re.search(r'between 1 and (\d+)', text)
            widths = ((op.parameters.get('bucket_width') or {}).get('schema') or {}).get('enum') or []
            for width in widths:
                rules[width] = (default, int(maximum.group(1)) if maximum else None)
        return rules

    # -- requests ----------------------------------------------------------------------------------

    def validate_request(self, method: str, path: str, query: Mapping[str, list[str]]) -> ValidRequest:
        """Coerce and check a request's query against its operation; raise RequestError if refused.

        `query` maps each name to the list of its values, as parse_qs gives it. Array parameters may be
        repeated (`group_by=a&group_by=b`); `name[]` is accepted as the same parameter.
        """
        found = self.find(method, path)
        if found is None:
            raise RequestError(f'Invalid URL ({method.upper()} {urlsplit(path).path})', status=404)
        op, path_params = found
        declared = op.query_parameters
        merged: dict[str, list[str]] = {}
        members: dict[str, dict[str, list[str]]] = {}
        for raw_name, values in query.items():
            name = raw_name[:-2] if raw_name.endswith('[]') else raw_name
            base, _, member = name.partition('[')
            if member.endswith(']') and base in declared and self._is_object(declared[base]):
                # An object parameter, one member per query name: `effective_at[gte]=...` (OpenAI's form).
                members.setdefault(base, {})[member[:-1]] = values
                continue
            if name not in declared:
                raise RequestError(f'Unrecognized request argument supplied: {raw_name}', raw_name)
            merged.setdefault(name, []).extend(values)
        params: dict[str, Any] = {}
        for name, p in declared.items():
            schema = p.get('schema') or {}
            if name in members:
                value = self._coerce_object(name, schema, members[name])
                self._check_schema(op, name, schema, value)
                params[name] = value
                continue
            if name not in merged:
                if p.get('required'):
                    raise RequestError(f"Missing required parameter: '{name}'.", name, 'missing_required_parameter')
                if 'default' in schema:
                    params[name] = copy.deepcopy(schema['default'])
                continue
            value = self._coerce(name, schema, merged[name])
            self._check_schema(op, name, schema, value)
            params[name] = value
        return ValidRequest(op, path_params, params)

    def _is_object(self, parameter: dict) -> bool:
        return self._resolve(parameter.get('schema') or {}).get('type') == 'object'

    def _coerce_object(self, name: str, schema: dict, members: dict[str, list[str]]) -> dict:
        properties = self._resolve(schema).get('properties') or {}
        out = {}
        for member, values in members.items():
            if member not in properties:
                raise RequestError(f'Unrecognized request argument supplied: {name}[{member}]', name)
            out[member] = self._coerce(f'{name}[{member}]', properties[member], values)
        return out

    def _coerce(self, name: str, schema: dict, values: list[str]) -> Any:
        schema = self._resolve(schema)
        if schema.get('type') == 'array':
            items = self._resolve(schema.get('items') or {})
            out = []
            for i, v in enumerate(values):
                out.append(self._scalar(f'{name}[{i}]' if len(values) > 1 else name, items, v))
            return out
        if len(values) != 1:
            raise RequestError(
                f"Invalid value for '{name}': expected a single value, but got {len(values)}.", name, 'invalid_type'
            )
        return self._scalar(name, schema, values[0])

    def _scalar(self, name: str, schema: dict, raw: str) -> Any:
        kind = schema.get('type')
        value: Any = raw
        if kind == 'integer':
            if not re.fullmatch(r'-?\d+', raw.strip()):
                raise RequestError(
                    f"Invalid type for '{name}': expected an integer, but got a string ('{raw}') instead.",
                    name.split('[')[0],
                    'invalid_type',
                )
            value = int(raw)
        elif kind == 'number':
            try:
                value = float(raw)
            except ValueError:
                raise RequestError(
                    f"Invalid type for '{name}': expected a number, but got a string ('{raw}') instead.",
                    name.split('[')[0],
                    'invalid_type',
                ) from None
        elif kind == 'boolean':
            lowered = raw.strip().lower()
            if lowered not in ('true', 'false'):
                raise RequestError(
                    f"Invalid type for '{name}': expected a boolean, but got a string ('{raw}') instead.",
                    name.split('[')[0],
                    'invalid_type',
                )
            value = lowered == 'true'
        if 'enum' in schema and value not in schema['enum']:
            raise RequestError(
                f"Invalid value: '{raw}'. Supported values are: {_quote_list(schema['enum'])}.",
                name.split('[')[0],
                'invalid_value',
            )
        return value

    def _check_schema(self, op: Operation, name: str, schema: dict, value: Any) -> None:
        key = ('param', op.method, op.template, name)
        validator = self._validators.get(key)
        if validator is None:
            validator = self._validators[key] = Draft202012Validator(_strip(schema), registry=self.registry)
        error = next(iter(validator.iter_errors(value)), None)
        if error is not None:
            raise RequestError(f"Invalid value for '{name}': {error.message}.", name, 'invalid_value')

    # -- responses ---------------------------------------------------------------------------------

    def response_schema_ref(self, path: str, method: str = 'GET', status: str = '200') -> str:
        op = self.operation(method, path)
        response = self._resolve(op.spec['responses'][str(status)])
        schema = response['content']['application/json']['schema']
        if '$ref' in schema:
            return schema['$ref']
        raise ValueError(f'the {status} response of {op.template} has an inline schema')

    def response_validator(self, path: str, method: str = 'GET', status: str = '200') -> Draft202012Validator:
        op = self.operation(method, path)
        key = ('response', op.method, op.template, str(status))
        validator = self._validators.get(key)
        if validator is None:
            ref = self.response_schema_ref(path, method, status)
            validator = Draft202012Validator({'$ref': SPEC_URI + ref}, registry=self.registry)
            self._validators[key] = validator
        return validator

    def validate_response(self, path: str, body: Any, method: str = 'GET', status: str = '200') -> list[str]:
        """Every way `body` breaks the spec's schema for that response; empty when it conforms."""
        return _errors(self.response_validator(path, method, status), body)

    def validate_schema(self, ref: str, instance: Any) -> list[str]:
        """Check `instance` against a component, e.g. '#/components/schemas/ErrorResponse'."""
        key = ('schema', ref)
        validator = self._validators.get(key)
        if validator is None:
            validator = self._validators[key] = Draft202012Validator({'$ref': SPEC_URI + ref}, registry=self.registry)
        return _errors(validator, instance)


def _errors(validator: Draft202012Validator, instance: Any) -> list[str]:
    errors = []
    for error in validator.iter_errors(instance):
        where = '/'.join(str(p) for p in error.absolute_path) or '(root)'
        errors.append(f'{where}: {error.message}')
    return errors


@lru_cache(maxsize=4)
def _load(path: str) -> OpenAPISpec:
    return OpenAPISpec(path)


def load_spec(path: str | os.PathLike | None = None) -> OpenAPISpec:
    """The spec, parsed once per process and path."""
    return _load(str(Path(path) if path is not None else default_spec_path()))


def validate_response(path: str, body: Any, method: str = 'GET', status: str = '200') -> list[str]:
    return load_spec().validate_response(path, body, method, status)
