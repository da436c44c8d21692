"""The functions, methods and module-level code of Python files, as separately scorable "code units".

The models were trained on single functions: a whole file scored as one input dilutes a
vulnerable function among the safe ones (a file whose SQL-injection function alone scores
0.999 scored 0.000).  ``predict`` and ``explain`` therefore score each unit this module
finds, and a repository scan uses the same extraction, so a finding is always reported
as the same name and line range.

What a unit is:

* every function and method that is not inside another function (a nested function or
  class is part of the function that holds it), named by its qualified name
  (``Handler.get``), from its first decorator to its last line;
* the module-level code: everything outside those functions, when it holds more than
  imports, docstrings and ``pass`` (``if __name__ == "__main__": main()``, class
  attributes, top-level queries).  Each extracted function is replaced by blank lines (by
  ``pass`` where its block would be left empty, such as a class of only methods), so the
  unit still parses and keeps the file's line numbers.

Line numbers are 1-based and inclusive, as editors and tracebacks show them; line ``k`` of
a unit's ``code`` is line :meth:`CodeUnit.file_line` ``(k)`` of the file.  A file that
does not parse raises :class:`CodeUnitError` (a ``ValueError``) naming the file and line:
it is never skipped silently.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .records import Reason

#: ``CodeUnit.kind`` values.
FUNCTION, METHOD, MODULE = "function", "method", "module"
#: The name of the module-level unit.
MODULE_NAME = "<module>"
#: Directories a directory walk never enters (caches, VCS and virtualenv folders are hidden or these).
SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "site-packages"})

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")  # lines as ast counts them (not str.splitlines)
_INDENT = re.compile(r"[ \t]*")


class CodeUnitError(ValueError):
    """A Python file that cannot be split into units.  ``reason`` is ingest's word for it
    (``parse_error``: not valid Python; ``non_utf8``: not decodable), ``line`` where the parser stopped."""

    def __init__(self, path: str, line: int | None, detail: str, reason: str = Reason.PARSE_ERROR):
        self.path, self.line, self.detail, self.reason = path, line, detail, reason
        where = f"{path}: line {line}" if line else path
        super().__init__(f"{where}: {detail}")


@dataclass(frozen=True)
class CodeUnit:
    """One scorable piece of a Python file."""

    path: str
    name: str  # qualified name ("Handler.get"), or MODULE_NAME
    kind: str  # FUNCTION, METHOD or MODULE
    start_line: int  # 1-based, inclusive: the first decorator's line for a decorated function
    end_line: int  # 1-based, inclusive
    code: str  # the unit's lines, its indentation removed, "\n"-terminated

    @property
    def id(self) -> str:
        """Unique within a file (two definitions may share a name): ``path:name:start-end``."""
        return f"{self.path}:{self.name}:{self.start_line}-{self.end_line}"

    def file_line(self, line: int) -> int:
        """The file's line number of line ``line`` (1-based) of :attr:`code`."""
        return self.start_line + line - 1


def python_units(source: str, path: str = "<string>") -> list[CodeUnit]:
    """The units of one file's ``source`` in line order (module-level code first on a tie).

    ``path`` only names the units and errors.  Raises :class:`CodeUnitError` when
    ``source`` is not valid Python 3, with the line the parser stopped at.
    """
    tree = _parse(source, path)
    lines = [line.rstrip("\r\n") for line in _LINE.findall(source)]
    found = list(_definitions(tree.body, ()))
    units = [_unit(path, name, kind, node, lines) for name, kind, node in found]
    module = _module_unit(path, tree, [node for _, _, node in found], lines)
    return sorted(([module] if module else []) + units, key=lambda u: (u.start_line, u.kind != MODULE))


def read_python(path: Path) -> str:
    """The text of a Python file, decoded as Python decodes it (PEP 263 coding line, else UTF-8)."""
    raw = path.read_bytes()
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
        return raw.decode(encoding).removeprefix("\ufeff")
    except (SyntaxError, LookupError, UnicodeDecodeError) as exc:
        raise CodeUnitError(str(path), None, f"cannot be decoded ({exc}): save it as UTF-8",
                            Reason.NON_UTF8) from None


def file_units(path: Path) -> list[CodeUnit]:
    """:func:`python_units` of the file at ``path`` (:class:`CodeUnitError` if it does not parse)."""
    return python_units(read_python(path), str(path))


def python_files(root: Path) -> list[Path]:
    """``root`` itself if it is a file, else every ``*.py`` file below it, sorted, outside hidden and
    cache directories (``.git``, ``.venv``, ``__pycache__``...)."""
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*.py") if p.is_file()
                  and not any(part.startswith(".") or part in SKIPPED_DIRS for part in p.relative_to(root).parts[:-1]))


def _parse(source: str, path: str) -> ast.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # invalid escape sequences etc. are not our concern
            return ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise CodeUnitError(path, exc.lineno, f"not valid Python ({exc.msg}): fix the syntax error, or pass the "
                                              "functions as a JSONL file of {id, code}") from None
    except (ValueError, RecursionError) as exc:  # NUL bytes; nesting too deep for the parser
        raise CodeUnitError(path, None, f"not valid Python ({exc})") from None


def _definitions(body: list[ast.stmt], scope: tuple[str, ...],
                 in_class: bool = False) -> Iterator[tuple[str, str, ast.AST]]:
    """(qualified name, kind, node) of each function not inside another function, in source order."""
    for node in body:
        if isinstance(node, _FUNCTIONS):
            yield ".".join((*scope, node.name)), METHOD if in_class else FUNCTION, node
        elif isinstance(node, ast.ClassDef):
            yield from _definitions(node.body, (*scope, node.name), in_class=True)
        else:
            for block in _blocks(node):
                yield from _definitions(block, scope, in_class)


def _blocks(node: ast.stmt) -> Iterator[list[ast.stmt]]:
    """The statement lists inside a compound statement (if/for/while/with/try/match)."""
    for name in ("body", "orelse", "finalbody"):
        block = getattr(node, name, None)
        if isinstance(block, list):
            yield block
    for handler in getattr(node, "handlers", []):
        yield handler.body
    for case in getattr(node, "cases", []):
        yield case.body


def _span(node: ast.AST) -> tuple[int, int]:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)]), node.end_lineno or node.lineno


def _unit(path: str, name: str, kind: str, node: ast.AST, lines: list[str]) -> CodeUnit:
    start, end = _span(node)
    return CodeUnit(path, name, kind, start, end, _dedent(lines[start - 1 : end]))


def _dedent(lines: list[str]) -> str:
    """Remove the first line's indentation from every line that has it (lines inside a multi-line
    string that do not are kept as they are), so a method parses as a top-level function."""
    indent = _INDENT.match(lines[0]).group() if lines else ""
    return "".join((line[len(indent):] if line.startswith(indent) else line) + "\n" for line in lines)


def _module_unit(path: str, tree: ast.Module, functions: list[ast.AST], lines: list[str]) -> CodeUnit | None:
    """The code outside ``functions``, or None when that is only imports, docstrings and ``pass``."""
    if not _has_code(tree.body):
        return None
    kept = list(lines)
    placeholders = set(_placeholders(tree.body))
    for node in functions:
        start, end = _span(node)
        kept[start - 1 : end] = [""] * (end - start + 1)
        if id(node) in placeholders:
            kept[start - 1] = _INDENT.match(lines[start - 1]).group() + "pass"
    used = [n for n, line in enumerate(kept, start=1) if line.strip()]
    start, end = used[0], used[-1]
    return CodeUnit(path, MODULE_NAME, MODULE, start, end, "".join(line + "\n" for line in kept[start - 1 : end]))


def _placeholders(body: list[ast.stmt]) -> Iterator[int]:
    """``id()`` of the first function of each block that holds nothing but functions: removing them all
    would leave the block empty (a syntax error), so that one leaves a ``pass``."""
    functions = [node for node in body if isinstance(node, _FUNCTIONS)]
    if functions and len(functions) == len(body):
        yield id(functions[0])
    for node in body:
        if isinstance(node, ast.ClassDef):
            yield from _placeholders(node.body)
        elif not isinstance(node, _FUNCTIONS):
            for block in _blocks(node):
                yield from _placeholders(block)


def _has_code(body: list[ast.stmt]) -> bool:
    """Whether ``body`` holds a statement outside functions that is more than an import, docstring or pass."""
    for node in body:
        if isinstance(node, _FUNCTIONS) or isinstance(node, (ast.Import, ast.ImportFrom, ast.Pass)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring, or a bare constant / Ellipsis
        if isinstance(node, ast.ClassDef):
            if _has_code(node.body):
                return True
            continue
        blocks = list(_blocks(node))
        guard = isinstance(node, (ast.If, ast.Try, getattr(ast, "TryStar", ast.Try)))  # `if TYPE_CHECKING:` etc.
        if not (guard and blocks) or any(_has_code(b) for b in blocks):
            return True
    return False


__all__ = ["CodeUnit", "CodeUnitError", "FUNCTION", "METHOD", "MODULE", "MODULE_NAME", "file_units",
           "python_files", "python_units", "read_python"]
