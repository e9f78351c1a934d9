"""Reading a config file: ``${NAME}`` and ``${file:/path}`` references, the line of every
key, and each problem placed on its line as ``PATH:LINE: key: message`` with no secret in it.

Nothing here knows the schema (monitor/config.py): the model to validate against, which
values are secret and how the schema's errors read are passed in.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from rules.errors import ConfigError
from rules.schema import config_errors, key_path

REDACTED = "***"
_M = TypeVar("_M", bound=BaseModel)

Loc = tuple[str | int, ...]
# The secrets a mapping holds besides its `secret_keys` values, given where it is.
SecretsIn = Callable[[dict[Any, Any], Loc], Iterable[str]]
# A validation error's key and message (pydantic's message, made readable) in the
# config's terms.
Explain = Callable[[ErrorDetails, str], tuple[str, str]]


class ConfigErrors(ConfigError):
    """Every problem of one config file; ``str()`` prints one ``PATH:LINE: ...`` per line."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        self.errors = list(errors) or [ConfigError("invalid config")]
        first = self.errors[0]
        super().__init__(first.message, key=first.key, path=first.path, line=first.line)

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)


# References are masked before parsing, so `{password: ${PW}}` stays valid flow YAML, and
# resolved after, in string values only, so no secret ever passes through the YAML parser.
_REF = re.compile(r"\$\{([^}\n]*)\}")
_MASK = re.compile("\ue000(\\d+)\ue001")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def read(path: str | Path) -> str:
    """The text of a config file; :class:`ConfigErrors` if it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ConfigErrors(
            [ConfigError(f"cannot read: {reason}", path=str(path), line=0)]
        ) from None
    except UnicodeDecodeError:
        raise ConfigErrors([ConfigError("not UTF-8 text", path=str(path), line=0)]) from None


def _key_path(err: ErrorDetails, message: str) -> tuple[str, str]:
    return key_path(err["loc"]), message


class Document:
    """One YAML text on its way to a model: parsed, references filled, problems kept with
    the node tree that places them on lines.

    ``secret_keys`` name keys whose string values are secret, ``secrets_in`` finds other
    secrets in a mapping, and ``explain`` words a validation error in the config's terms.
    """

    def __init__(
        self,
        text: str,
        source: str,
        base: Path,
        *,
        secret_keys: frozenset[str] = frozenset(),
        secrets_in: SecretsIn | None = None,
        explain: Explain = _key_path,
    ) -> None:
        refs: list[str] = []

        def mask(found: re.Match[str]) -> str:
            refs.append(found.group(1))
            return f"\ue000{len(refs) - 1}\ue001"

        self.source = source
        self.explain = explain
        self.root, data = _parse(_REF.sub(mask, text), source)
        self.resolver = _Resolver(refs, base, secret_keys, secrets_in)
        self.errors = list(_duplicate_keys(self.root, (), set()))
        try:
            self.data = self.resolver.walk({} if data is None else data, ())
        except RecursionError:
            self.data = None
            self.errors.append(ConfigError("the file contains itself (a recursive YAML alias)"))
        self.errors += self.resolver.errors

    def validate(
        self, model: type[_M], overrides: dict[str, Any] | None = None, **context: Any
    ) -> _M | None:
        if not isinstance(self.data, dict):
            if self.data is not None:
                keys = ", ".join(model.model_fields)
                self.errors.append(ConfigError(f"expected a mapping of keys ({keys})"))
            return None
        try:
            return model.model_validate({**self.data, **(overrides or {})}, context=context)
        except ValidationError as exc:
            failed = self.resolver.failed_under
            self.errors += [e for e in _validation_errors(exc, self.explain) if not failed(e.key)]
        except RecursionError:
            self.errors.append(ConfigError("the file contains itself (a recursive YAML alias)"))
        return None

    def failure(self) -> ConfigErrors:
        return ConfigErrors(_placed(self.errors, self.source, self.root, self.resolver.secrets))


def _parse(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    except yaml.MarkedYAMLError as exc:
        mark, since = exc.problem_mark or exc.context_mark, exc.context_mark
        message = f"invalid YAML: {exc.problem or exc.context or 'cannot parse'}"
        if (
            exc.context
            and exc.problem
            and since is not None
            and mark is not None
            and since.line != mark.line
        ):
            message += f" ({exc.context} from line {since.line + 1})"
        line = mark.line + 1 if mark is not None else 0
        raise ConfigErrors([ConfigError(message, path=source, line=line)]) from None
    except yaml.YAMLError:
        raise ConfigErrors([ConfigError("invalid YAML", path=source, line=0)]) from None
    finally:
        loader.dispose()


class _Resolver:
    """Fills ``${...}`` references in string values; keeps the errors, the keys that
    failed, and the secret values to keep out of messages."""

    def __init__(
        self,
        refs: list[str],
        base: Path,
        secret_keys: frozenset[str],
        secrets_in: SecretsIn | None,
    ) -> None:
        self.refs, self.base = refs, base
        self.secret_keys, self.secrets_in = secret_keys, secrets_in
        self.errors: list[ConfigError] = []
        self.failed: list[str] = []
        self.secrets: set[str] = set()

    def walk(self, value: Any, loc: Loc) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                name = self.restore(key) if isinstance(key, str) else key
                out[name] = self.walk(item, (*loc, str(name)))
                if name in self.secret_keys and isinstance(out[name], str):
                    self.secrets.add(out[name])
            if self.secrets_in is not None:
                self.secrets.update(self.secrets_in(out, loc))
            return out
        if isinstance(value, list):
            return [self.walk(item, (*loc, i)) for i, item in enumerate(value)]
        if isinstance(value, str):
            return _MASK.sub(lambda found: self.resolve(int(found.group(1)), loc), value)
        return value

    def restore(self, text: str) -> str:
        return _MASK.sub(lambda found: "${" + self.refs[int(found.group(1))] + "}", text)

    def resolve(self, index: int, loc: Loc) -> str:
        ref, key = self.refs[index], key_path(loc)
        if ref.startswith("file:"):
            target = Path(ref.removeprefix("file:").strip()).expanduser()
            target = target if target.is_absolute() else self.base / target
            try:
                content = target.read_text(encoding="utf-8")
            except OSError as exc:
                reason = exc.strerror or exc.__class__.__name__
                return self.fail(key, f"cannot read file {target}: {reason}")
            except UnicodeDecodeError:
                return self.fail(key, f"file {target} is not UTF-8 text")
            content = content.removesuffix("\n").removesuffix("\r")
            self.secrets.add(content)  # files are how secrets are mounted
            return content
        if not _ENV_NAME.fullmatch(ref):
            return self.fail(key, f"{'${' + ref + '}'!r} is neither ${{NAME}} nor ${{file:/path}}")
        value = os.environ.get(ref)
        return self.fail(key, f"environment variable {ref} is not set") if value is None else value

    def fail(self, key: str, message: str) -> str:
        self.errors.append(ConfigError(message, key=key))
        self.failed.append(key)
        return ""

    def failed_under(self, key: str) -> bool:
        """Whether ``key`` is (inside) a value whose reference failed: its error is told."""
        return any(key == f or key.startswith((f"{f}.", f"{f}[")) for f in self.failed)


def _duplicate_keys(node: yaml.Node | None, loc: Loc, seen: set[int]) -> Iterator[ConfigError]:
    # PyYAML keeps the last of two equal keys silently; a repeated key is a mistake.
    if node is None or id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            line = key.start_mark.line + 1
            if name in first and name != "<<":
                message = f"key {name!r} is given twice (first on line {first[name]})"
                yield ConfigError(message, key=key_path((*loc, name)), line=line)
            first.setdefault(name, line)
            yield from _duplicate_keys(value, (*loc, name), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*loc, i), seen)


def _validation_errors(exc: ValidationError, explain: Explain) -> list[ConfigError]:
    out = []
    for err, error in zip(exc.errors(), config_errors(exc), strict=True):
        key, message = explain(err, error.message)
        if err["type"] in ("model_type", "model_attributes_type", "dict_type"):
            message = "expected a mapping of keys"
        elif err["type"] == "list_type":
            message = "expected a list"
        out.append(ConfigError(message, key=key))
    return out


def _placed(
    errors: list[ConfigError], source: str, root: yaml.Node | None, secrets: set[str]
) -> list[ConfigError]:
    """Errors with the file, the line of their key, and no secret in their text."""

    def scrub(text: str) -> str:
        for secret in sorted(secrets, key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, REDACTED)
        return text

    placed = [
        ConfigError(
            scrub(error.message),
            key=scrub(error.key),
            path=source,
            line=error.line if error.line is not None else _line(root, error.key),
        )
        for error in errors
    ]
    return sorted(placed, key=lambda error: error.line or 0)


def _line(root: yaml.Node | None, key: str) -> int:
    """The 1-based line of ``key`` (``policies[1].targets.resolution``) in the YAML; for a
    key that is not there, the line where its parent mapping starts."""
    if root is None:
        return 1
    node, line = root, int(root.start_mark.line) + 1
    for name, index in _KEY_PART.findall(key):
        found: tuple[yaml.Node, yaml.Node] | None = None
        if index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            item = node.value[int(index)]
            found = (item, item)
        elif name and isinstance(node, yaml.MappingNode):
            for k, v in node.value:  # the last of equal keys is the one that counts
                if isinstance(k, yaml.ScalarNode) and k.value == name:
                    found = (k, v)
        if found is None:
            return int(node.start_mark.line) + 1
        line, node = int(found[0].start_mark.line) + 1, found[1]
    return line
