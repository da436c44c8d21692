"""Built-in synthetic data: vulnerable Python functions and their minimal fixes.

The embedded default trains on this, so it must not be solvable by memorising a
template.  Each sample is assembled from independent choices: where the tainted
value comes from (request args/form/json, ``input()``, ``sys.argv``,
``os.environ``, a parameter), how it is massaged on the way (stripping, lower-
casing, copying into other variables, dict lookups), how the dangerous string is
built (f-string, ``%``, ``.format``, concatenation, ``join``), which sink
receives it and which fix neutralises it (bound parameters, ``shlex.quote``,
argument lists, ``basename``/``secure_filename``/``realpath`` checks, ``int()``
casts, escaping), plus unrelated statements around it (logging, guards, loops,
try/except).  Safe *hard negatives* use the same vocabulary without a flow from
input to sink (constant queries, f-strings that only reach a logger).

Every vulnerable function has a counterfactual fix sharing its ``pair_id``; the
lines the fix changes are recorded as ``vulnerable_lines``.
"""

from __future__ import annotations

import difflib
import random
from dataclasses import dataclass
from typing import Callable

from ..records import CWE_NAMES, stable_id

FUNC_VERBS = ["get", "load", "fetch", "find", "lookup", "search", "read", "show", "export",
              "handle", "process", "run", "list", "serve", "download", "query", "check", "view"]
NOUNS = ["user", "account", "order", "invoice", "report", "item", "product", "profile", "ticket",
         "customer", "record", "entry", "document", "session", "host", "backup", "log", "asset"]
FIELDS = ["name", "user_id", "email", "term", "category", "status", "city", "slug", "code", "tag",
          "owner", "title", "region", "sku", "username", "filter_value", "key"]
TABLES = ["users", "orders", "accounts", "products", "invoices", "tickets", "customers", "events",
          "audit_log", "sessions", "inventory", "reports"]
COLUMNS = ["id", "name", "email", "status", "created_at", "owner", "title", "price", "total"]


@dataclass
class Pair:
    """One generated function in both versions."""

    cwe: str
    vulnerable: str
    fixed: str | None  # None: an unpaired safe function (a hard negative)


class Gen:
    """Random choices with the vocabulary above; one instance per sample."""

    def __init__(self, rng: random.Random):
        self.r = rng

    def pick(self, xs: list) -> object:
        return self.r.choice(xs)

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def ident(self, base: list[str]) -> str:
        word = self.pick(base)
        return word if self.chance(0.6) else f"{word}_{self.pick(['val', 'arg', 'in', 'raw', 'str', 'param'])}"

    def func_name(self) -> str:
        return f"{self.pick(FUNC_VERBS)}_{self.pick(NOUNS)}{self.pick(['', 's', '_by_' + self.pick(FIELDS)])}"

    def source(self, var: str, params: list[str]) -> tuple[list[str], list[str]]:
        """Lines that bind ``var`` to attacker-controlled input, and imports needed."""
        key = self.pick(FIELDS)
        options: list[tuple[str, list[str]]] = [
            (f"{var} = request.args.get({key!r}, '')", ["from flask import request"]),
            (f"{var} = request.form[{key!r}]", ["from flask import request"]),
            (f"{var} = request.json.get({key!r})", ["from flask import request"]),
            (f"{var} = request.cookies.get({key!r}, '')", ["from flask import request"]),
            (f"{var} = request.headers.get('X-{key.title().replace('_', '-')}')", ["from flask import request"]),
            (f"{var} = input({('Enter ' + key + ': ')!r})", []),
            (f"{var} = sys.argv[{self.r.randint(1, 3)}]", ["import sys"]),
            (f"{var} = os.environ.get({key.upper()!r}, '')", ["import os"]),
        ]
        if self.chance(0.3):
            params.append(var)
            return [], []
        line, imports = self.pick(options)
        return [line], imports

    def massage(self, var: str) -> tuple[list[str], str]:
        """Harmless transformations the tainted value flows through (taint survives)."""
        lines: list[str] = []
        for _ in range(self.r.randint(0, 2)):
            kind = self.r.randint(0, 4)
            if kind == 0:
                lines.append(f"{var} = {var}.strip()")
            elif kind == 1:
                lines.append(f"{var} = str({var}).lower()")
            elif kind == 2:
                new = self.ident(FIELDS) + "_clean"
                lines.append(f"{new} = {var}")
                var = new
            elif kind == 3:
                lines.append(f"{var} = {var}.replace(' ', '')")
            else:
                new = "opts"
                lines.append(f"{new} = {{'value': {var}, 'limit': {self.r.randint(5, 100)}}}")
                var = f"{new}['value']"
        return lines, var

    def filler(self) -> list[str]:
        """Unrelated statements so that position and length reveal nothing."""
        options = [
            [f"logger.info({self.pick(['starting', 'handling request', 'lookup'])!r})"],
            [f"if not {self.pick(['enabled', 'feature_on', 'ready'])}:", "    return None"],
            [f"start = time.time()"],
            [f"attempts = {self.r.randint(1, 5)}"],
            [f"results = []"],
            [f"limit = min({self.r.randint(10, 500)}, MAX_ROWS)"],
            [f"# {self.pick(['TODO: cache this', 'see ticket', 'legacy path', 'keep in sync with api'])}"],
        ]
        return list(self.pick(options)) if self.chance(0.7) else []


def _format(g: Gen, template_head: str, var: str, tail: str = "") -> tuple[str, str]:
    """A string built from a constant and ``var`` in one of five styles; (expr, style)."""
    style = g.pick(["fstring", "percent", "format", "concat", "join"])
    if style == "fstring":
        return f'f"{template_head}{{{var}}}{tail}"', style
    if style == "percent":
        return f'"{template_head}%s{tail}" % {var}', style
    if style == "format":
        return f'"{template_head}{{}}{tail}".format({var})', style
    if style == "concat":
        return f'"{template_head}" + {var}' + (f' + "{tail}"' if tail else ""), style
    return f'"".join(["{template_head}", {var}' + (f', "{tail}"' if tail else "") + "])", style


def sql_injection(g: Gen) -> Pair:
    table, col, key = g.pick(TABLES), g.pick(COLUMNS), g.pick(FIELDS)
    var = g.ident(FIELDS)
    params: list[str] = []
    src, imports = g.source(var, params)
    massage, used = g.massage(var)
    driver = g.pick(["sqlite3", "psycopg2", "sqlalchemy", "django"])
    placeholder = "?" if driver == "sqlite3" else "%s"
    quote = g.chance(0.5)
    head = f"SELECT {col} FROM {table} WHERE {key} = " + ("'" if quote else "")
    tail = ("'" if quote else "") + (g.pick(["", " LIMIT 10", " ORDER BY id"]))
    expr, _ = _format(g, head, used, tail)
    safe_sql = f'"SELECT {col} FROM {table} WHERE {key} = {placeholder}{tail.lstrip(chr(39))}"'
    qvar = g.pick(["query", "sql", "stmt", "q"])
    cur = g.pick(["cursor", "cur", "c"])
    if driver == "sqlalchemy":
        imports += ["from sqlalchemy import text"]
        setup = []
        vuln = [f"{qvar} = {expr}", f"rows = db.session.execute(text({qvar})).fetchall()"]
        fix = [f'{qvar} = text("SELECT {col} FROM {table} WHERE {key} = :value{tail.lstrip(chr(39))}")',
               f"rows = db.session.execute({qvar}, {{'value': {used}}}).fetchall()"]
    elif driver == "django":
        setup = []
        model = g.pick(["User", "Order", "Account", "Product"])
        vuln = [f"{qvar} = {expr}", f"rows = list({model}.objects.raw({qvar}))"]
        fix = [f"{qvar} = {safe_sql}", f"rows = list({model}.objects.raw({qvar}, [{used}]))"]
    else:
        imports += [f"import {driver}"]
        connect = "sqlite3.connect(DB_PATH)" if driver == "sqlite3" else "psycopg2.connect(DSN)"
        setup = [f"conn = {connect}", f"{cur} = conn.cursor()"]
        inline = g.chance(0.35)
        call = "executemany" if g.chance(0.1) else "execute"
        fixed_args = f"({used},)" if g.chance(0.6) else f"[{used}]"
        if call == "executemany":
            fixed_args = f"[({used},)]"
        if inline:
            vuln = [f"{cur}.{call}({expr})"]
            fix = [f"{cur}.{call}({safe_sql}, {fixed_args})"]
        else:
            vuln = [f"{qvar} = {expr}", f"{cur}.{call}({qvar})"]
            fix = [f"{qvar} = {safe_sql}", f"{cur}.{call}({qvar}, {fixed_args})"]
        if call == "execute" and not inline and g.chance(0.25):
            # an int() cast is a sanitizer: the formatted query is then harmless
            fix = [f"{used} = int({used})", f"{qvar} = {expr}", f"{cur}.{call}({qvar})"]
        vuln.append(f"rows = {cur}.fetchall()")
        fix.append(f"rows = {cur}.fetchall()")
    ret = g.pick(["return rows", "return [dict(r) for r in rows]", "return rows[0] if rows else None",
                  "return len(rows)"])
    body_common_pre = src + g.filler() + massage + setup
    return _assemble(g, "CWE-89", imports, params, body_common_pre, vuln, fix, [ret])


def command_injection(g: Gen) -> Pair:
    var = g.ident(["host", "filename", "target", "branch", "archive", "path", "url", "pkg"])
    params: list[str] = []
    src, imports = g.source(var, params)
    massage, used = g.massage(var)
    tool, args = g.pick([("ping", ["-c", "1"]), ("tar", ["-czf", "out.tgz"]), ("git", ["checkout"]),
                         ("nslookup", []), ("convert", ["-resize", "50%"]), ("wc", ["-l"]),
                         ("curl", ["-sS"]), ("du", ["-sh"]), ("grep", ["-r", "TODO"])])
    head = " ".join([tool] + args) + " "
    expr, style = _format(g, head, used)
    listed = ", ".join(repr(a) for a in [tool] + args) + f", {used}"
    sink = g.pick(["os.system", "os.popen", "subprocess.call", "subprocess.run", "subprocess.check_output",
                   "subprocess.Popen"])
    imports += ["import os"] if sink.startswith("os.") else ["import subprocess"]
    cmd = g.pick(["cmd", "command", "shell_cmd", "line"])
    out = g.pick(["out", "status", "result", "proc"])
    shell_kw = ", shell=True" if sink.startswith("subprocess") else ""
    fix_kind = g.pick(["list", "quote"]) if sink.startswith("subprocess") else "quote_or_run"
    if fix_kind == "quote_or_run":
        fix_kind = g.pick(["quote", "list"])
    vuln = [f"{cmd} = {expr}", f"{out} = {sink}({cmd}{shell_kw})"]
    if fix_kind == "quote":
        imports += ["import shlex"]
        q_expr, _ = _format(g, head, f"shlex.quote({used})")
        fix = [f"{cmd} = {q_expr}", f"{out} = {sink}({cmd}{shell_kw})"]
    else:
        imports += ["import subprocess"]
        fix = [f"{cmd} = [{listed}]", f"{out} = subprocess.run({cmd}, check=True, capture_output=True)"]
    ret = g.pick([f"return {out}", "return True", f"return {out} is not None"])
    return _assemble(g, "CWE-78", imports, params, src + g.filler() + massage, vuln, fix, [ret])


def path_traversal(g: Gen) -> Pair:
    var = g.ident(["filename", "name", "path", "doc", "attachment", "report_name", "image"])
    params: list[str] = []
    src, imports = g.source(var, params)
    massage, used = g.massage(var)
    base = g.pick(["UPLOAD_DIR", "BASE_DIR", "STATIC_ROOT", "REPORTS_DIR", "MEDIA_ROOT"])
    imports += ["import os"]
    pvar = g.pick(["path", "full_path", "target", "file_path"])
    build = g.pick(["join", "concat", "fstring"])
    if build == "join":
        vexpr = f"os.path.join({base}, {used})"
    elif build == "concat":
        vexpr = f'{base} + "/" + {used}'
    else:
        vexpr = f'f"{{{base}}}/{{{used}}}"'
    sink = g.pick(["open", "send_file", "send_from_directory_like", "remove"])
    if sink == "open":
        mode = g.pick(["'r'", "'rb'"])
        use = [f"with open({pvar}, {mode}) as fh:", "    data = fh.read()"]
        ret = "return data"
    elif sink == "send_file":
        imports += ["from flask import send_file"]
        use = [f"response = send_file({pvar})"]
        ret = "return response"
    elif sink == "remove":
        use = [f"os.remove({pvar})"]
        ret = "return True"
    else:
        imports += ["import shutil"]
        use = [f"shutil.copy({pvar}, '/tmp/export')"]
        ret = "return '/tmp/export'"
    fix_kind = g.pick(["basename", "secure", "realpath"])
    if fix_kind == "basename":
        fix = [f"{pvar} = {vexpr.replace(used, f'os.path.basename({used})', 1)}"] + use
    elif fix_kind == "secure":
        imports += ["from werkzeug.utils import secure_filename"]
        fix = [f"{pvar} = {vexpr.replace(used, f'secure_filename({used})', 1)}"] + use
    else:
        fix = [f"{pvar} = os.path.realpath({vexpr})",
               f"if not {pvar}.startswith(os.path.realpath({base}) + os.sep):",
               "    raise PermissionError('path escapes the base directory')"] + use
    vuln = [f"{pvar} = {vexpr}"] + use
    return _assemble(g, "CWE-22", imports, params, src + g.filler() + massage, vuln, fix, [ret])


def xss(g: Gen) -> Pair:
    var = g.ident(["name", "comment", "query", "title", "message", "bio"])
    params: list[str] = []
    src, imports = g.source(var, params)
    massage, used = g.massage(var)
    tag = g.pick(["h1", "p", "div", "span", "li"])
    expr, _ = _format(g, f"<{tag}>", used, f"</{tag}>")
    hvar = g.pick(["html", "body", "markup", "page"])
    esc = g.pick(["escape", "html.escape", "markupsafe.escape"])
    imports += {"escape": ["from markupsafe import escape"], "html.escape": ["import html"],
                "markupsafe.escape": ["import markupsafe"]}[esc]
    safe_expr, _ = _format(g, f"<{tag}>", f"{esc}({used})", f"</{tag}>")
    vuln = [f"{hvar} = {expr}"]
    fix = [f"{hvar} = {safe_expr}"]
    ret = g.pick([f"return {hvar}", f"return make_response({hvar})", f"return {{'html': {hvar}}}"])
    return _assemble(g, "CWE-79", imports, params, src + g.filler() + massage, vuln, fix, [ret])


def hard_negative(g: Gen) -> Pair:
    """Safe code that *looks* risky: formatting that only reaches a logger, constant SQL/commands."""
    var = g.ident(FIELDS)
    params: list[str] = []
    src, imports = g.source(var, params)
    kind = g.pick(["const_sql", "log_fstring", "list_cmd", "static_path", "param_sql"])
    cwe = {"const_sql": "CWE-89", "param_sql": "CWE-89", "log_fstring": "CWE-89",
           "list_cmd": "CWE-78", "static_path": "CWE-22"}[kind]
    if kind == "const_sql":
        imports += ["import sqlite3"]
        body = ["conn = sqlite3.connect(DB_PATH)",
                f'rows = conn.execute("SELECT {g.pick(COLUMNS)} FROM {g.pick(TABLES)} LIMIT 50").fetchall()',
                f"logger.info(f'{{len(rows)}} rows for {{{var}}}')", "return rows"]
    elif kind == "param_sql":
        imports += ["import sqlite3"]
        body = ["conn = sqlite3.connect(DB_PATH)",
                f'sql = "SELECT * FROM {g.pick(TABLES)} WHERE {g.pick(FIELDS)} = ?"',
                f"return conn.execute(sql, ({var},)).fetchall()"]
    elif kind == "log_fstring":
        body = [f'message = f"lookup requested for {{{var}}}"', "logger.warning(message)",
                f"return {{'requested': {var}}}"]
    elif kind == "list_cmd":
        imports += ["import subprocess"]
        body = [f"proc = subprocess.run(['{g.pick(['ls', 'git', 'du'])}', '--', {var}], capture_output=True)",
                "return proc.returncode"]
    else:
        imports += ["import os"]
        body = [f"path = os.path.join(STATIC_ROOT, 'index.html')",
                "with open(path) as fh:", "    return fh.read()"]
    code = _function(g, imports, params, src + g.filler() + body)
    return Pair(cwe, code, None)


def _function(g: Gen, imports: list[str], params: list[str], body: list[str]) -> str:
    header_imports = sorted(set(imports)) if g.chance(0.5) else []
    args = ", ".join(params + ([] if g.chance(0.6) else ["limit=10"]))
    deco = [g.pick(["@app.route('/api/data')", "@login_required", "@cached(ttl=60)"])] if g.chance(0.3) else []
    doc = [f'    """{g.pick(["Return matching rows.", "Handle the request.", "Legacy helper."])}"""'] if g.chance(0.4) else []
    lines = header_imports + ([""] if header_imports else []) + deco + [f"def {g.func_name()}({args}):"] + doc
    if g.chance(0.2):
        lines += ["    try:"] + [f"        {ln}" for ln in body] + ["    except Exception as exc:",
                                                                  "        logger.error('failed: %s', exc)",
                                                                  "        raise"]
    else:
        lines += [f"    {ln}" for ln in body]
    return "\n".join(lines) + "\n"


def _assemble(g: Gen, cwe: str, imports: list[str], params: list[str], pre: list[str],
              vuln: list[str], fix: list[str], post: list[str]) -> Pair:
    state = g.r.getstate()
    vulnerable = _function(g, imports, params, pre + vuln + post)
    g.r.setstate(state)  # the same decorative choices for both versions: a minimal pair
    fixed = _function(g, imports, params, pre + fix + post)
    return Pair(cwe, vulnerable, fixed)


GENERATORS: list[Callable[[Gen], Pair]] = [sql_injection, command_injection, path_traversal, xss]


def changed_lines(before: str, after: str) -> list[int]:
    """1-based lines of ``before`` that the fix replaces or deletes.

    A fix that only *inserts* (a guard, a cast) marks the line it was inserted
    before: the statement that lacked the protection.
    """
    a, b = before.splitlines(), after.splitlines()
    lines: set[int] = set()
    for tag, i1, i2, _, _ in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag in ("replace", "delete"):
            lines.update(range(i1 + 1, i2 + 1))
        elif tag == "insert" and a:
            lines.add(min(i1 + 1, len(a)))
    return sorted(lines)


def generate_records(count: int, seed: int = 13, negative_share: float = 0.1) -> list[dict]:
    """``count`` raw records: vulnerable/fixed pairs plus a share of hard negatives."""
    rng = random.Random(seed)
    records: list[dict] = []
    i = 0
    while len(records) < count:
        g = Gen(random.Random(rng.getrandbits(64)))
        pair = hard_negative(g) if g.chance(negative_share) else GENERATORS[i % len(GENERATORS)](g)
        i += 1
        pair_id = stable_id("synthetic", seed, i)
        common = {"cwe": pair.cwe, "vulnerability_type": CWE_NAMES[pair.cwe], "source": "synthetic",
                  "_source": f"synthetic:{count}@{seed}", "_line": i}
        if pair.fixed is None:
            records.append({**common, "id": f"syn-{pair_id}-neg", "code": pair.vulnerable, "label": 0,
                            "origin": "synthetic-negative"})
            continue
        records.append({**common, "id": f"syn-{pair_id}-vul", "code": pair.vulnerable, "label": 1,
                        "pair_id": pair_id, "origin": "synthetic",
                        "vulnerable_lines": changed_lines(pair.vulnerable, pair.fixed)})
        if len(records) < count:
            records.append({**common, "id": f"syn-{pair_id}-fix", "code": pair.fixed, "label": 0,
                            "pair_id": pair_id, "origin": "synthetic-counterfactual"})
    return records
