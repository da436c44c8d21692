"""Built-in synthetic data: vulnerable Python functions and their minimal fixes.

The embedded default trains on this, so it must not be solvable by memorising a
template.  Each sample is assembled from independent choices: the framework it is
written for (a Flask, Django or FastAPI handler, or a plain helper/CLI function),
where the tainted value comes from (request args/form/json/cookies/headers,
Django's ``request.GET``/``POST``/``body``/``META``, a typed FastAPI parameter,
``input()``, ``sys.argv``, ``os.environ``, a parameter), how it is massaged on the
way (stripping, lower-casing, copying into other variables, dict lookups, helper
calls), how the dangerous value is built (f-string, ``%``, ``.format``,
concatenation, ``join``), which sink receives it and which *real* fix neutralises
it, plus unrelated statements around it (logging, guards, loops, try/except).

Ten vulnerability classes (:data:`GENERATORS`): SQL injection, command injection,
path traversal, XSS (string-built HTML, ``Markup``/``mark_safe``, Jinja ``|safe``
and ``autoescape=False``), code injection (``eval``/``exec``/``compile``), unsafe
deserialisation (``pickle``, ``yaml.load``, ``marshal``, ``shelve``,
``jsonpickle``), XXE (lxml, ``xml.sax``, ``minidom``), SSRF (requests, urllib,
httpx), open redirect and server-side template injection.  Fixes are the ones
real projects ship: bound parameters, ``shlex.quote`` and argument lists,
``basename``/``secure_filename``/``realpath`` checks, escaping and ``format_html``,
``ast.literal_eval`` and dispatch tables, ``json``/``yaml.safe_load``,
``defusedxml`` and ``resolve_entities=False``, host allow-lists,
``url_has_allowed_host_and_scheme`` and ``url_for``, constant templates with a
context.  Safe *hard negatives* use the same vocabulary without a flow from input
to sink (constant queries, f-strings that only reach a logger, user input only in
``params=``, ``send_from_directory``).

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


#: Who the generated function is written for (its sources, signature and decorators follow).
FRAMEWORKS = ("flask", "django", "fastapi", "helper")


class Gen:
    """Random choices with the vocabulary above; one instance per sample."""

    def __init__(self, rng: random.Random):
        self.r = rng
        self.framework = self.pick(FRAMEWORKS)

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
        header = key.title().replace("_", "-")
        options: list[tuple[str, list[str]]] = {
            "flask": [
                (f"{var} = request.args.get({key!r}, '')", ["from flask import request"]),
                (f"{var} = request.form[{key!r}]", ["from flask import request"]),
                (f"{var} = request.json.get({key!r})", ["from flask import request"]),
                (f"{var} = request.cookies.get({key!r}, '')", ["from flask import request"]),
                (f"{var} = request.headers.get('X-{header}')", ["from flask import request"]),
            ],
            "django": [
                (f"{var} = request.GET.get({key!r}, '')", []),
                (f"{var} = request.POST.get({key!r})", []),
                (f"{var} = request.POST[{key!r}]", []),
                (f"{var} = request.COOKIES.get({key!r}, '')", []),
                (f"{var} = request.META.get('HTTP_X_{key.upper()}', '')", []),
                (f"{var} = json.loads(request.body).get({key!r})", ["import json"]),
            ],
            "fastapi": [],  # the value arrives as a typed parameter
            "helper": [
                (f"{var} = input({('Enter ' + key + ': ')!r})", []),
                (f"{var} = sys.argv[{self.r.randint(1, 3)}]", ["import sys"]),
                (f"{var} = os.environ.get({key.upper()!r}, '')", ["import os"]),
            ],
        }[self.framework]
        if not options or self.chance(0.3):
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

    def path_of(name: str) -> str:
        if build == "join":
            return f"os.path.join({base}, {name})"
        if build == "concat":
            return f'{base} + "/" + {name}'
        return f'f"{{{base}}}/{{{name}}}"'

    vexpr = path_of(used)
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
        fix = [f"{pvar} = {path_of(f'os.path.basename({used})')}"] + use
    elif fix_kind == "secure":
        imports += ["from werkzeug.utils import secure_filename"]
        fix = [f"{pvar} = {path_of(f'secure_filename({used})')}"] + use
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
    if g.chance(0.5):  # template-era XSS: Markup, mark_safe, |safe, autoescape=False, raw responses
        extra, vuln, fix, ret = _xss_template(g, used, hvar)
        imports += extra
    else:
        ret = g.pick([f"return {hvar}", f"return make_response({hvar})", f"return {{'html': {hvar}}}"])
    return _assemble(g, "CWE-79", imports, params, src + g.filler() + massage, vuln, fix, [ret] if ret else [])


def _xss_template(g: Gen, used: str, hvar: str) -> tuple[list[str], list[str], list[str], str]:
    """(imports, vulnerable lines, fixed lines, return) of an XSS through a template API."""
    tag = g.pick(["b", "p", "em", "li"])
    kind = g.pick(["markup", "mark_safe", "safe_filter", "autoescape", "response"])
    if kind == "markup":
        return (["from markupsafe import Markup"], [f'{hvar} = Markup(f"<{tag}>{{{used}}}</{tag}>")'],
                [f'{hvar} = Markup("<{tag}>{{}}</{tag}>").format({used})'], f"return {hvar}")
    if kind == "mark_safe":
        return (["from django.utils.safestring import mark_safe", "from django.utils.html import format_html"],
                [f'{hvar} = mark_safe("<{tag}>" + {used} + "</{tag}>")'],
                [f'{hvar} = format_html("<{tag}>{{}}</{tag}>", {used})'], f"return {hvar}")
    if kind == "safe_filter":
        return (["from flask import render_template_string"],
                [f'{hvar} = render_template_string("<{tag}>{{{{ value|safe }}}}</{tag}>", value={used})'],
                [f'{hvar} = render_template_string("<{tag}>{{{{ value }}}}</{tag}>", value={used})'],
                f"return {hvar}")
    if kind == "autoescape":
        page = g.pick(["page.html", "comment.html", "profile.html"])
        return (["from jinja2 import Environment, PackageLoader"],
                [f"env = Environment(loader=PackageLoader('app'), autoescape=False)",
                 f"{hvar} = env.get_template({page!r}).render(value={used})"],
                [f"env = Environment(loader=PackageLoader('app'), autoescape=True)",
                 f"{hvar} = env.get_template({page!r}).render(value={used})"], f"return {hvar}")
    response = {"django": "HttpResponse", "fastapi": "HTMLResponse"}.get(g.framework, "make_response")
    return (["from markupsafe import escape"], [f'return {response}(f"<{tag}>{{{used}}}</{tag}>")'],
            [f'return {response}(f"<{tag}>{{escape({used})}}</{tag}>")'], "")


def code_injection(g: Gen) -> Pair:
    var = g.ident(["expr", "formula", "code", "rule", "expression", "setting"])
    params: list[str] = []
    src, imports = g.source(var, params)
    massage, used = g.massage(var)
    out = g.pick(["result", "value", "answer", "computed"])
    kind = g.pick(["eval", "exec", "compile", "built", "dispatch"])
    imports += ["import ast"]
    if kind == "eval":  # a "calculator" or a literal setting: literal_eval is the fix
        vuln, fix = [f"{out} = eval({used})"], [f"{out} = ast.literal_eval({used})"]
    elif kind == "exec":
        imports += ["import json"]
        vuln = ["scope = {}", f"exec({used}, scope)", f"{out} = scope.get('result')"]
        fix = [f"scope = json.loads({used})", f"{out} = scope.get('result')"]
    elif kind == "compile":
        vuln = [f"program = compile({used}, '<rule>', 'eval')", f"{out} = eval(program, {{'__builtins__': {{}}}})"]
        fix = [f"{out} = ast.literal_eval({used})"]
    elif kind == "built":
        expr, _ = _format(g, "int(", used, ") * RATE")
        vuln, fix = [f"{out} = eval({expr})"], [f"{out} = int({used}) * RATE"]
    else:
        vuln = [f'{out} = eval("operator." + {used} + "(a, b)")']
        fix = [f"if {used} not in OPERATIONS:", "    raise ValueError('unknown operation')",
               f"{out} = OPERATIONS[{used}](a, b)"]
    return _assemble(g, "CWE-94", imports, params, src + g.filler() + massage, vuln, fix, [f"return {out}"])


def deserialization(g: Gen) -> Pair:
    var = g.ident(["payload", "data", "blob", "body", "state", "token"])
    params: list[str] = []
    src, imports = g.source(var, params)
    massage, used = g.massage(var)
    raw = used
    pre: list[str] = []
    if g.chance(0.4):
        imports += ["import base64"]
        pre, raw = [f"raw = base64.b64decode({used})"], "raw"
    obj = g.pick(["obj", "config", "session_data", "settings", "message"])
    kind = g.pick(["pickle", "yaml", "yaml_loader", "marshal", "jsonpickle", "shelve"])
    imports += ["import json"]
    if kind == "pickle":
        imports += ["import pickle"]
        vuln, fix = [f"{obj} = pickle.loads({raw})"], [f"{obj} = json.loads({raw})"]
    elif kind == "yaml":
        imports += ["import yaml"]
        vuln, fix = [f"{obj} = yaml.load({raw})"], [f"{obj} = yaml.safe_load({raw})"]
    elif kind == "yaml_loader":
        imports += ["import yaml"]
        vuln = [f"{obj} = yaml.load({raw}, Loader=yaml.Loader)"]
        fix = [f"{obj} = yaml.load({raw}, Loader=yaml.SafeLoader)"]
    elif kind == "marshal":
        imports += ["import marshal"]
        vuln, fix = [f"{obj} = marshal.loads({raw})"], [f"{obj} = json.loads({raw})"]
    elif kind == "jsonpickle":
        imports += ["import jsonpickle"]
        vuln, fix = [f"{obj} = jsonpickle.decode({raw})"], [f"{obj} = json.loads({raw})"]
    else:
        imports += ["import shelve", "import os"]
        vuln = [f"{obj} = shelve.open({raw})"]
        fix = [f"with open(os.path.join(CACHE_DIR, os.path.basename({raw}))) as fh:", f"    {obj} = json.load(fh)"]
    ret = g.pick([f"return {obj}", f"return {obj}.get('user')", f"return dict({obj})"])
    return _assemble(g, "CWE-502", imports, params, src + g.filler() + massage + pre, vuln, fix, [ret])


def xxe(g: Gen) -> Pair:
    var = g.ident(["xml", "document", "payload", "feed", "body", "upload"])
    params: list[str] = []
    src, imports = g.source(var, params)
    massage, used = g.massage(var)
    root = g.pick(["root", "tree", "doc", "parsed"])
    kind = g.pick(["lxml", "lxml_parser", "etree_parse", "minidom", "sax", "stdlib"])
    if kind == "lxml":
        imports += ["from lxml import etree", "import defusedxml.ElementTree"]
        vuln, fix = [f"{root} = etree.fromstring({used})"], [f"{root} = defusedxml.ElementTree.fromstring({used})"]
    elif kind == "lxml_parser":
        imports += ["from lxml import etree"]
        vuln = ["parser = etree.XMLParser(resolve_entities=True)", f"{root} = etree.fromstring({used}, parser)"]
        fix = ["parser = etree.XMLParser(resolve_entities=False, no_network=True)",
               f"{root} = etree.fromstring({used}, parser)"]
    elif kind == "etree_parse":
        imports += ["from lxml import etree"]
        vuln = [f"{root} = etree.parse({used})"]
        fix = [f"{root} = etree.parse({used}, etree.XMLParser(resolve_entities=False, no_network=True))"]
    elif kind == "minidom":
        imports += ["from xml.dom import minidom", "import defusedxml.minidom"]
        vuln, fix = [f"{root} = minidom.parseString({used})"], [f"{root} = defusedxml.minidom.parseString({used})"]
    elif kind == "sax":
        imports += ["import io", "import xml.sax", "from xml.sax.handler import feature_external_ges"]
        common = ["handler = RecordHandler()", "parser = xml.sax.make_parser()", "parser.setContentHandler(handler)"]
        vuln = common + ["parser.setFeature(feature_external_ges, True)", f"parser.parse(io.BytesIO({used}))",
                         f"{root} = handler.records"]
        fix = common + ["parser.setFeature(feature_external_ges, False)", f"parser.parse(io.BytesIO({used}))",
                        f"{root} = handler.records"]
    else:
        imports += ["import xml.etree.ElementTree as ET", "import defusedxml.ElementTree"]
        vuln, fix = [f"{root} = ET.fromstring({used})"], [f"{root} = defusedxml.ElementTree.fromstring({used})"]
    ret = g.pick([f"return {root}", f"return {root}.findtext('name')" if kind != "sax" else f"return len({root})",
                  f"return [el.tag for el in {root}]" if kind in ("lxml", "stdlib") else f"return {root}"])
    return _assemble(g, "CWE-611", imports, params, src + g.filler() + massage, vuln, fix, [ret])


def ssrf(g: Gen) -> Pair:
    var = g.ident(["url", "target", "endpoint", "callback", "image_url", "webhook", "feed_url"])
    params: list[str] = []
    src, imports = g.source(var, params)
    massage, used = g.massage(var)
    client = g.pick(["requests", "urllib", "httpx"])
    call = {"requests": "requests.get({u}, timeout=5)", "urllib": "urllib.request.urlopen({u}, timeout=5)",
            "httpx": "httpx.get({u}, timeout=5.0)"}[client]
    imports += {"requests": ["import requests"], "urllib": ["import urllib.request"], "httpx": ["import httpx"]}[client]
    resp = g.pick(["resp", "response", "reply", "fetched"])
    whole = g.chance(0.6)
    target = used if whole else _format(g, "https://", used, "/api/status")[0]
    vuln = [f"{resp} = {call.format(u=target)}"]
    fix_kind = g.pick(["allowlist", "helper", "quoted"]) if whole else g.pick(["allowlist", "quoted"])
    if fix_kind == "allowlist":
        imports += ["from urllib.parse import urlparse"]
        host = f"urlparse({used}).hostname" if whole else used
        leave = g.pick(["abort(400)", "raise ValueError('host not allowed')", "return None"])
        fix = [f"if {host} not in ALLOWED_HOSTS:", f"    {leave}"] + vuln
    elif fix_kind == "helper":
        fix = [f"if not is_allowed_url({used}):", "    raise PermissionError('refusing to fetch that URL')"] + vuln
    else:
        imports += ["from urllib.parse import quote"]
        fix = [f"{resp} = {call.format(u=_format(g, 'https://api.internal/', f'quote({used})')[0])}"]
    ret = g.pick([f"return {resp}.status_code" if client != "urllib" else f"return {resp}.status",
                  f"return {resp}.read()" if client == "urllib" else f"return {resp}.json()"])
    return _assemble(g, "CWE-918", imports, params, src + g.filler() + massage, vuln, fix, [ret])


def open_redirect(g: Gen) -> Pair:
    var = g.ident(["next_url", "target", "redirect_to", "return_url", "came_from", "destination"])
    params: list[str] = []
    src, imports = g.source(var, params)
    massage, used = g.massage(var)
    sink = {"django": g.pick(["redirect", "HttpResponseRedirect"]), "fastapi": "RedirectResponse"}.get(
        g.framework, "redirect")
    imports += {"redirect": ["from flask import redirect, url_for"] if g.framework != "django"
                else ["from django.shortcuts import redirect"],
                "HttpResponseRedirect": ["from django.http import HttpResponseRedirect"],
                "RedirectResponse": ["from fastapi.responses import RedirectResponse"]}[sink]
    dest = g.pick(["target", "location", "goto", "next_page", "url"])
    value = g.pick([used, f"{used} or '/'", f'f"{{{used}}}?welcome=1"', f"{used}.strip()"])
    extra = ", code=302" if sink == "redirect" and g.framework != "django" and g.chance(0.3) else ""
    send = [f"return {sink}({{d}}{extra})"] if g.chance(0.6) else [
        f"response = {sink}({{d}}{extra})", "response.set_cookie('seen', '1')", "return response"]

    def out(d: str) -> list[str]:
        return [line.format(d=d) for line in send]

    vuln = [f"{dest} = {value}", *out(dest)]
    kind = g.pick(["django_check", "safe_helper", "prefix", "url_for"]) if g.framework != "django" else g.pick(
        ["django_check", "safe_helper", "prefix"])
    if kind == "django_check":
        imports += ["from django.utils.http import url_has_allowed_host_and_scheme"]
        hosts = "{request.get_host()}" if g.framework == "django" else "ALLOWED_HOSTS"
        fix = [f"{dest} = {value}", f"if not url_has_allowed_host_and_scheme({dest}, allowed_hosts={hosts}):",
               f"    {dest} = '/'", *out(dest)]
    elif kind == "safe_helper":
        fix = [f"{dest} = {value}", f"if not is_safe_url({dest}):", f"    return {sink}('/')", *out(dest)]
    elif kind == "prefix":
        fix = [f"{dest} = {value}", f"if not {dest}.startswith('/') or {dest}.startswith('//'):",
               f"    {dest} = '/'", *out(dest)]
    else:
        fix = [f"{dest} = {value}", *out("url_for('dashboard')")]
    return _assemble(g, "CWE-601", imports, params, src + g.filler() + massage, vuln, fix, [])


def template_injection(g: Gen) -> Pair:
    var = g.ident(["name", "greeting", "title", "message", "signature", "template"])
    params: list[str] = []
    src, imports = g.source(var, params)
    massage, used = g.massage(var)
    out = g.pick(["html", "rendered", "body", "page"])
    kind = g.pick(["render_string", "jinja_template", "from_string"])
    if kind == "render_string":
        imports += ["from flask import render_template_string"]
        expr, _ = _format(g, "<h1>Hello ", used, "</h1>")
        vuln = [f"{out} = render_template_string({expr})"]
        fix = [f'{out} = render_template_string("<h1>Hello {{{{ name }}}}</h1>", name={used})']
    elif kind == "jinja_template":
        imports += ["from jinja2 import Template", "from flask import render_template"]
        vuln = [f"tpl = Template({used})", f"{out} = tpl.render(user=current_user)"]
        fix = [f"{out} = render_template('greeting.html', user=current_user, text={used})"]
    else:
        imports += ["from flask import render_template_string"]
        expr, _ = _format(g, "Dear ", used, ",")
        vuln = [f"tpl = env.from_string({expr})", f"{out} = tpl.render(order=order)"]
        fix = [f"{out} = render_template_string('Dear {{{{ name }}}},', order=order, name={used})"]
    return _assemble(g, "CWE-1336", imports, params, src + g.filler() + massage, vuln, fix, [f"return {out}"])


def hard_negative(g: Gen) -> Pair:
    """Safe code that *looks* risky: formatting that only reaches a logger, constant SQL/commands."""
    var = g.ident(FIELDS)
    params: list[str] = []
    src, imports = g.source(var, params)
    kind = g.pick(["const_sql", "log_fstring", "list_cmd", "static_path", "param_sql", "requests_params",
                   "safe_yaml", "literal_eval", "defused", "url_for", "send_from_directory", "context_template"])
    cwe = {"const_sql": "CWE-89", "param_sql": "CWE-89", "log_fstring": "CWE-89", "list_cmd": "CWE-78",
           "static_path": "CWE-22", "requests_params": "CWE-918", "safe_yaml": "CWE-502", "literal_eval": "CWE-94",
           "defused": "CWE-611", "url_for": "CWE-601", "send_from_directory": "CWE-22",
           "context_template": "CWE-1336"}[kind]
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
    elif kind == "static_path":
        imports += ["import os"]
        body = [f"path = os.path.join(STATIC_ROOT, 'index.html')",
                "with open(path) as fh:", "    return fh.read()"]
    elif kind == "requests_params":
        imports += ["import requests"]
        body = [f"resp = requests.get(SEARCH_API, params={{'q': {var}}}, timeout=5)", "return resp.json()"]
    elif kind == "safe_yaml":
        imports += ["import yaml"]
        body = [f"settings = yaml.safe_load({var})", "return settings.get('theme')"]
    elif kind == "literal_eval":
        imports += ["import ast"]
        body = [f"value = ast.literal_eval({var})", "return value"]
    elif kind == "defused":
        imports += ["import defusedxml.ElementTree"]
        body = [f"root = defusedxml.ElementTree.fromstring({var})", "return root.findtext('id')"]
    elif kind == "url_for":
        imports += ["from flask import redirect, url_for"]
        body = [f"return redirect(url_for('profile', name={var}))"]
    elif kind == "send_from_directory":
        imports += ["from flask import send_from_directory"]
        body = [f"return send_from_directory(UPLOAD_DIR, {var})"]
    else:
        imports += ["from flask import render_template"]
        body = [f"return render_template('greeting.html', name={var})"]
    code = _function(g, imports, params, src + g.filler() + body)
    return Pair(cwe, code, None)


def _function(g: Gen, imports: list[str], params: list[str], body: list[str]) -> str:
    header_imports = sorted(set(imports)) if g.chance(0.5) else []
    signature = list(params) + ([] if g.chance(0.6) else ["limit=10"])
    deco: list[str] = []
    prefix = "def"
    if g.framework == "django":
        signature = ["request"] + [p for p in signature if p != "request"]
        deco = [g.pick(["@login_required", "@require_http_methods(['GET', 'POST'])", "@csrf_exempt"])] \
            if g.chance(0.5) else []
    elif g.framework == "fastapi":
        signature = [f"{p}: str" if "=" not in p else "limit: int = 10" for p in signature]
        deco = [g.pick(["@app.get('/items')", "@router.post('/run')", "@app.get('/files/{name}')"])]
        prefix = "async def" if g.chance(0.5) else "def"
    elif g.framework == "flask":
        deco = [g.pick(["@app.route('/api/data')", "@app.route('/view', methods=['GET', 'POST'])",
                        "@login_required"])] if g.chance(0.5) else []
    elif g.chance(0.2):
        deco = [g.pick(["@cached(ttl=60)", "@functools.lru_cache(maxsize=None)"])]
    doc = [f'    """{g.pick(["Return matching rows.", "Handle the request.", "Legacy helper."])}"""'] if g.chance(0.4) else []
    lines = header_imports + ([""] if header_imports else []) + deco + [f"{prefix} {g.func_name()}({', '.join(signature)}):"] + doc
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


GENERATORS: list[Callable[[Gen], Pair]] = [sql_injection, command_injection, path_traversal, xss, code_injection,
                                           deserialization, xxe, ssrf, open_redirect, template_injection]


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
