"""DynamicMemoryPolicy YAML files as users write them: read, checked with the API's own rules,
every problem named by file, line and field.

`dynamic-memory check` prints these problems; `--policy-file` on simulate, replay and recommend
runs the one policy a file holds. The rules are the pydantic models of api.py, from which the
CRD's schema and CEL rules are generated (tests/e2e/test_crd_on_apiserver.py feeds the same bad
policies to the real API server and to `check`, and both must refuse each at the same field).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dynamic_memory.api import GROUP, KIND, VERSION, PolicySpec, spec_problems
from dynamic_memory.errors import UserError

API_VERSION = f"{GROUP}/{VERSION}"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a file, where it is."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """One DynamicMemoryPolicy of a file: its name and, when valid, its spec."""

    file: str
    line: int
    namespace: str | None
    name: str
    spec: PolicySpec | None
    problems: tuple[Problem, ...]


@dataclass(frozen=True, slots=True)
class FileReport:
    """What one file holds: its policies, the documents of other kinds, and its problems."""

    policies: tuple[PolicyDocument, ...]
    other_kinds: tuple[str, ...]
    problems: tuple[Problem, ...]


def _text(path: str) -> str:
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder; name the YAML files in it") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (it is not UTF-8); a policy is a YAML file") from None


def _line_of(node: yaml.Node | None, path: list[str]) -> int | None:
    """The line of the deepest node along `path` (field names and list indexes) in a composed document."""
    line = node.start_mark.line + 1 if node is not None else None
    for step in path:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == step), None)
            if hit is None:
                return line
            node, line = hit[1], hit[0].start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and step.isdigit() and int(step) < len(node.value):
            node = node.value[int(step)]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _document(file: str, node: yaml.Node) -> PolicyDocument | str | Problem:
    """A policy, the kind of a document that is something else, or why it is not a Kubernetes object."""
    line = node.start_mark.line + 1
    try:
        obj: Any = yaml.SafeLoader("").construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        return Problem(file, mark.line + 1 if mark else line, "", f"not valid YAML: {exc.problem}")
    if not isinstance(obj, dict):
        return Problem(file, line, "", "a document must be a Kubernetes object (a mapping with apiVersion and kind)")
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if kind != KIND:
        return str(kind or "a document without kind")
    problems: list[Problem] = []

    def add(path: str, message: str) -> None:
        problems.append(Problem(file, _line_of(node, path.split(".")), path, message))

    if api_version != API_VERSION:
        add("apiVersion", f"must be {API_VERSION}, not {api_version!r}")
    meta = obj.get("metadata")
    name, namespace = "", None
    if not isinstance(meta, dict):
        add("metadata", "must be a mapping with at least a name")
    else:
        name, namespace = meta.get("name") or "", meta.get("namespace")
        if not isinstance(name, str) or not name:
            add("metadata.name", "is required")
        elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            add("metadata.name", f"{name!r} is not a valid name (lower-case letters, digits, '-' and '.')")
        if namespace is not None and (not isinstance(namespace, str) or not _DNS_SUBDOMAIN.match(namespace)):
            add("metadata.namespace", f"{namespace!r} is not a valid namespace name")
    spec: PolicySpec | None = None
    if "spec" not in obj:
        add("spec", "is required")
    else:
        found = spec_problems(obj["spec"])
        for path, message in found:
            add(path, message)
        if not found:
            spec = PolicySpec.model_validate(obj["spec"])
    problems.sort(key=lambda p: p.line or 0)
    return PolicyDocument(file, line, namespace if isinstance(namespace, str) else None,
                          name if isinstance(name, str) else "", None if problems else spec, tuple(problems))


def read_policy_file(path: str) -> FileReport:
    """Every document of a YAML file (`-`: standard input), checked. Raises UserError only when the
    file cannot be read or parsed at all; problems of single policies are in the report."""
    text = _text(path)
    try:
        nodes = [n for n in yaml.compose_all(text) if n is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else path
        raise UserError(f"{where}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    policies: list[PolicyDocument] = []
    others: list[str] = []
    problems: list[Problem] = []
    for node in nodes:
        got = _document(path, node)
        if isinstance(got, PolicyDocument):
            policies.append(got)
            problems += got.problems
        elif isinstance(got, Problem):
            problems.append(got)
        else:
            others.append(got)
    return FileReport(tuple(policies), tuple(others), tuple(problems))


def load_policy(path: str) -> PolicyDocument:
    """The one valid policy a file holds, for --policy-file; anything else is a UserError."""
    report = read_policy_file(path)
    if report.problems:
        lines = [str(p) for p in report.problems[:10]]
        more = len(report.problems) - len(lines)
        raise UserError("\n".join(lines + ([f"... and {more} more"] if more > 0 else [])
                                  + [f"(check it with: dynamic-memory check {path})"]))
    if len(report.policies) != 1:
        raise UserError(f"{path}: holds {len(report.policies)} DynamicMemoryPolicies; --policy-file takes a file "
                        "with exactly one")
    return report.policies[0]
