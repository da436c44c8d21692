"""code_units: the functions, methods and module-level code of a Python file, with names and line ranges."""

from __future__ import annotations

import ast

import pytest

from streamguard_ml.code_units import (MODULE_NAME, CodeUnitError, file_units, python_files, python_units,
                                       read_python)

SOURCE = '''"""A module."""
import os

QUERY = "SELECT * FROM t WHERE id = "


class Handler(Base):
    table = "users"

    @property
    def name(self):
        return self._name

    async def get(self, q):
        def inner():
            return 1
        return os.system("ls " + q)


def run(cmd):
    os.system("ping " + cmd)


if __name__ == "__main__":
    run("x")
'''


def units_by_name(source: str = SOURCE) -> dict:
    return {u.name: u for u in python_units(source, "app.py")}


def test_each_function_and_method_is_a_unit_named_by_its_qualified_name_with_its_line_range():
    units = units_by_name()
    assert list(units) == [MODULE_NAME, "Handler.name", "Handler.get", "run"]  # line order
    spans = {name: (u.kind, u.start_line, u.end_line) for name, u in units.items()}
    assert spans == {MODULE_NAME: ("module", 1, 25), "Handler.name": ("method", 10, 12),
                     "Handler.get": ("method", 14, 17), "run": ("function", 20, 21)}
    # a nested function belongs to the function holding it; a decorator to the function it decorates
    assert "def inner" in units["Handler.get"].code and units["Handler.name"].code.startswith("@property\n")


def test_a_unit_is_its_own_lines_dedented_so_it_parses_alone_and_maps_back_to_file_lines():
    file_lines = SOURCE.splitlines()
    for unit in python_units(SOURCE, "app.py"):
        ast.parse(unit.code)  # a method parses as a top-level function; the module code still parses
        for k, line in enumerate(unit.code.splitlines(), start=1):
            if line.strip() and line.strip() != "pass":
                assert file_lines[unit.file_line(k) - 1].strip() == line.strip()
    get = units_by_name()["Handler.get"]
    assert get.code.splitlines()[0] == "async def get(self, q):" and get.file_line(4) == 17


def test_module_code_keeps_what_is_outside_functions_and_only_that():
    module = units_by_name()[MODULE_NAME].code
    assert 'QUERY = "SELECT' in module and 'table = "users"' in module and 'run("x")' in module
    assert "os.system" not in module and "return self._name" not in module


def test_a_block_left_empty_by_its_functions_keeps_a_pass_so_the_module_code_parses():
    source = "class A:\n    def f(self):\n        pass\n\n    def g(self):\n        pass\n\nA.x = 1\n"
    module = python_units(source, "a.py")[0]
    assert (module.name, module.start_line, module.end_line) == (MODULE_NAME, 1, 8)
    assert module.code.splitlines() == ["class A:", "    pass", "", "", "", "", "", "A.x = 1"]
    ast.parse(module.code)


def test_no_module_unit_when_the_module_level_is_only_imports_and_docstrings():
    source = '"""doc"""\nimport os\nfrom x import y\n\n\ndef f(a):\n    return a\n'
    assert [(u.name, u.start_line, u.end_line) for u in python_units(source, "f.py")] == [("f", 6, 7)]
    assert python_units("", "empty.py") == [] and python_units("import os\n", "i.py") == []


def test_a_file_with_a_syntax_error_raises_naming_the_file_and_line():
    with pytest.raises(CodeUnitError) as caught:
        python_units("def ok():\n    pass\n\ndef broken(:\n    pass\n", "bad.py")
    assert isinstance(caught.value, ValueError) and (caught.value.line, caught.value.reason) == (4, "parse_error")
    assert str(caught.value).startswith("bad.py: line 4: not valid Python") and "\n" not in str(caught.value)
    with pytest.raises(CodeUnitError, match="nul.py"):
        python_units("x = 1\x00\n", "nul.py")


def test_windows_line_endings_and_a_coding_line_are_read_as_python_reads_them(tmp_path):
    crlf = tmp_path / "crlf.py"
    crlf.write_bytes(b"import os\r\n\r\ndef f(a):\r\n    return os.system(a)\r\n")
    (unit,) = file_units(crlf)
    assert (unit.start_line, unit.end_line, unit.code) == (3, 4, "def f(a):\n    return os.system(a)\n")
    latin = tmp_path / "latin.py"
    latin.write_bytes(b"# -*- coding: latin-1 -*-\ndef f():\n    return '\xe9'\n")
    assert "\u00e9" in read_python(latin) and file_units(latin)[0].name == "f"
    bad = tmp_path / "bad.py"
    bad.write_bytes(b"def f():\n    return '\xff'\n")
    with pytest.raises(CodeUnitError, match="UTF-8") as caught:
        file_units(bad)
    assert caught.value.reason == "non_utf8"


def test_python_files_walks_a_directory_outside_hidden_and_cache_folders(tmp_path):
    for rel in ("b.py", "pkg/a.py", "pkg/notes.txt", ".venv/lib/x.py", "pkg/__pycache__/a.py", ".git/hooks/h.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    assert [p.relative_to(tmp_path).as_posix() for p in python_files(tmp_path)] == ["b.py", "pkg/a.py"]
    assert python_files(tmp_path / "b.py") == [tmp_path / "b.py"]
