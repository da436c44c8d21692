"""tree-sitter → program graph: AST, control flow, def-use data flow, call edges, taint marks.

The graph is what the Taint-Flow GNN sees.  Nodes are the named tree-sitter
nodes (comments and string delimiters dropped); each carries

* a node-type id from a *versioned* vocabulary shipped with the package
  (``data/node_types.json``) — never Python's per-process ``hash()``;
* identifier / literal / operator sub-tokens hashed with CRC-32 into buckets,
  stable across processes and machines;
* ``source`` / ``sink`` / ``sanitizer`` marks from the rule table
  ``data/taint_rules.json`` (data, not code), and two marks derived from them by
  a forward taint analysis over the flow edges: ``tainted`` (a value computed
  from a source, not passed through a sanitizer) and ``tainted_sink`` (a sink
  call whose injection point receives tainted data: the query of ``execute``,
  not its bound parameters; see :meth:`_Builder.propagate_taint`).

Edges are typed: ``ast`` (parent → child), ``cfg`` (statement order, branches,
loops), ``dfg`` (definition → use of a variable or attribute; right-hand side →
assigned name) and ``call`` (argument → its call).  The model adds reverse edges
itself, so the JSON form stays readable.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from itertools import islice, repeat
from typing import Any, Iterable

EDGE_TYPES = ("ast", "cfg", "dfg", "call")
EDGE_ID = {name: i for i, name in enumerate(EDGE_TYPES)}
MARKS = ("source", "sink", "sanitizer", "tainted", "tainted_sink")
MARK_BIT = {name: 1 << i for i, name in enumerate(MARKS)}
SUBTOKENS_PER_NODE = 6
SUBTOKEN_BUCKETS = 8192  # bucket 0 is padding
GRAPH_FORMAT_VERSION = "pg-3"  # pg-2: taint-analysis marks; pg-3: guards, leaving branches, ``x or y`` carries taint

SKIPPED_TYPES = {"comment", "string_start", "string_end", "string_content", "escape_sequence",
                 "line_continuation"}
#: Expressions whose value carries the taint of a child (``f"{x}"``, ``a + x``, ``x.y``,
#: ``x[0]``, ``x.strip()`` through the callee).  Arguments reach their call through
#: ``call`` edges and assigned values their targets through ``dfg`` edges instead.
VALUE_CARRIERS = frozenset({"binary_operator", "boolean_operator", "attribute", "subscript", "call", "string",
                            "interpolation", "concatenated_string", "parenthesized_expression", "conditional_expression",
                            "list", "tuple", "set", "dictionary", "pair", "list_comprehension",
                            "generator_expression", "set_comprehension", "dictionary_comprehension",
                            "await", "list_splat", "dictionary_splat", "expression_list", "format_expression"})
BLOCK_FIELDS = ("body", "consequence", "alternative")
_SPLIT = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+|[^\sA-Za-z\d]+")


@lru_cache(maxsize=1)
def vocabulary() -> dict[str, Any]:
    """The node-type vocabulary: ``{"version", "index": {type: id}}`` (0 = unknown)."""
    doc = json.loads(resources.files("streamguard_ml.data").joinpath("node_types.json").read_text())
    return {"version": doc["version"], "index": {t: i + 1 for i, t in enumerate(doc["types"])},
            "size": len(doc["types"]) + 1}


@lru_cache(maxsize=1)
def taint_rules() -> dict[str, Any]:
    return json.loads(resources.files("streamguard_ml.data").joinpath("taint_rules.json").read_text())


@lru_cache(maxsize=1)
def parser() -> Any:
    import tree_sitter as ts
    import tree_sitter_python as tsp

    return ts.Parser(ts.Language(tsp.language()))


def parse(code: str) -> Any:
    return parser().parse(code.encode("utf-8"))


def first_error_line(code: str) -> int | None:
    """1-based line of the first syntax error, or None when the code parses cleanly."""
    root = parse(code).root_node
    if not root.has_error:
        return None
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            return node.start_point[0] + 1
        stack.extend(reversed([c for c in node.children if c.has_error or c.is_error or c.is_missing]))
    return root.start_point[0] + 1


@lru_cache(maxsize=1 << 18)
def stable_bucket(token: str) -> int:
    return zlib.crc32(token.encode()) % (SUBTOKEN_BUCKETS - 1) + 1


def subtokens(text: str) -> list[str]:
    """``getUserName`` / ``get_user_name`` → ``get user name``; punctuation kept as tokens."""
    return list(_subtokens(text))


@lru_cache(maxsize=1 << 16)
def _subtokens(text: str) -> tuple[str, ...]:
    """Cached: identifiers and literals recur across functions."""
    return tuple(m.group().lower() for m in islice(_SPLIT.finditer(text), SUBTOKENS_PER_NODE))


@dataclass
class ProgramGraph:
    """A program graph in plain Python lists (cheap to build, easy to serialise)."""

    types: list[str] = field(default_factory=list)
    start_line: list[int] = field(default_factory=list)
    end_line: list[int] = field(default_factory=list)
    tokens: list[list[str]] = field(default_factory=list)
    marks: list[int] = field(default_factory=list)
    edges: list[tuple[int, int, int]] = field(default_factory=list)
    #: node → the CWE of the taint rule that made it a sink (what a scan names a finding's class by).
    sink_cwes: dict[int, str] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return len(self.types)

    def type_ids(self) -> list[int]:
        index = vocabulary()["index"]
        return [index.get(t, 0) for t in self.types]

    def token_buckets(self) -> list[list[int]]:
        return [[stable_bucket(t) for t in toks] + [0] * (SUBTOKENS_PER_NODE - len(toks))
                for toks in self.tokens]

    def to_json(self) -> dict[str, Any]:
        nodes = [{"id": i, "type": t, "start_line": s, "end_line": e, "tokens": toks,
                  "marks": [m for m in MARKS if self.marks[i] & MARK_BIT[m]]}
                 for i, (t, s, e, toks) in enumerate(zip(self.types, self.start_line, self.end_line, self.tokens))]
        edges = [{"src": s, "dst": d, "type": EDGE_TYPES[t]} for s, d, t in self.edges]
        return {"format": GRAPH_FORMAT_VERSION, "vocabulary": vocabulary()["version"],
                "rules": taint_rules()["version"], "nodes": nodes, "edges": edges}


def dotted(node: Any) -> str | None:
    """``a.b.c`` for identifier/attribute chains, else None."""
    if node.type == "identifier":
        return node.text.decode("utf-8", "replace")
    if node.type == "attribute":
        obj, attr = node.child_by_field_name("object"), node.child_by_field_name("attribute")
        base = dotted(obj) if obj is not None else None
        if base and attr is not None:
            return f"{base}.{attr.text.decode('utf-8', 'replace')}"
    return None


def callee_name(fn: Any) -> str | None:
    """The dotted name of a call's function; ``conn.cursor().execute`` → ``<expr>.execute``."""
    name = dotted(fn)
    if name is None and fn.type == "attribute" and fn.child_by_field_name("attribute") is not None:
        return "<expr>." + fn.child_by_field_name("attribute").text.decode("utf-8", "replace")
    return name


def _call_matches(pattern: str, callee: str) -> bool:
    if pattern.startswith("."):
        return callee.rsplit(".", 1)[-1] == pattern[1:] and "." in callee
    if pattern.endswith(".*"):
        return callee.startswith(pattern[:-1]) or f".{pattern[:-1]}" in f".{callee}"
    return callee == pattern or callee.endswith("." + pattern)


_RULE_KINDS = (("sources", "source"), ("sinks", "sink"), ("sanitizers", "sanitizer"))


@lru_cache(maxsize=1 << 16)
def _call_rules(callee: str) -> tuple[tuple[str, dict], ...]:
    """(mark, rule) for every call rule whose pattern matches ``callee``.

    Cached: the same callees (``cursor.execute``, ``logger.info``) recur in almost
    every function, and matching each call against the whole rule table was the
    most expensive step of graph building.
    """
    rules = [(mark, rule) for kind, mark in _RULE_KINDS for rule in taint_rules()[kind]]
    named = tuple((mark, rule) for mark, rule in rules if "call" in rule and _named_by(rule, callee))
    if named:  # a known API (subprocess.run without shell=True is no sink) is judged by its own rules only
        return named
    words = set(subtokens(callee.rsplit(".", 1)[-1]))  # project wrappers: self._run_ssh(...), db.query(...)
    return tuple((mark, rule) for mark, rule in rules if words & set(rule.get("name_words", ())))


def _compact(args: Any | None) -> str:
    """A call's argument text without whitespace (what ``if_text`` / ``unless_text`` search)."""
    return "".join(args.text.decode("utf-8", "replace").split()) if args is not None else ""


def _applies(rule: dict, keywords: set[str], positional: int, text: str) -> bool:
    """Whether a matching rule's conditions hold for this call (keyword, argument count, argument text)."""
    if rule.get("keyword") and rule["keyword"] not in keywords:
        return False
    if positional < rule.get("min_args", 0) or positional > rule.get("max_args", positional):
        return False
    if "if_text" in rule and not any(t in text for t in rule["if_text"]):
        return False
    return not any(t in text for t in rule.get("unless_text", ()))


def _named_by(rule: dict, callee: str) -> bool:
    if rule.get("builtin"):
        return callee in (rule["call"], "builtins." + rule["call"])
    return _call_matches(rule["call"], callee)


@lru_cache(maxsize=1 << 16)
def _is_source_attribute(name: str) -> bool:
    return any(name == a or name.endswith("." + a) for a in
               (r["attribute"] for r in taint_rules()["sources"] if "attribute" in r))


#: Leaves whose text (identifiers) or kind (literals) are their sub-tokens.
_LEAF_TYPES = frozenset({"identifier", "integer", "float", "true", "false", "none", "type_conversion"})
#: Operators whose sub-tokens are their operator symbols.
_OPERATOR_TYPES = frozenset({"binary_operator", "comparison_operator", "boolean_operator", "augmented_assignment",
                             "unary_operator"})
#: Node types that carry sub-tokens (every other node has none).
_TOKEN_TYPES = _LEAF_TYPES | _OPERATOR_TYPES | {"string"}


class _Builder:
    """One pass over the tree collects nodes; later passes add flow edges and marks."""

    def __init__(self, code: str):
        self.code = code
        self.g = ProgramGraph()
        self.index: dict[int, int] = {}
        self.nodes: list[Any] = []
        # sink call → (argument nodes data is injected through, only string-built taint counts, unconditional)
        self.sink_args: dict[int, list[tuple[list[int], bool, bool]]] = {}

    # -- nodes and AST edges -------------------------------------------------
    def collect(self, root: Any) -> None:
        stack: list[tuple[Any, int]] = [(root, -1)]
        edges, ast = self.g.edges, EDGE_ID["ast"]
        while stack:
            node, parent = stack.pop()
            t = node.type
            if t in SKIPPED_TYPES:
                continue
            i = self._add_node(node, t)
            if parent >= 0:
                edges.append((parent, i, ast))
            children = node.named_children
            if children:
                children.reverse()
                stack.extend(zip(children, repeat(i)))

    def _add_node(self, node: Any, t: str | None = None) -> int:
        t = t or node.type
        i = len(self.nodes)
        self.index[node.id] = i
        self.nodes.append(node)
        g = self.g
        g.types.append(t)
        g.start_line.append(node.start_point[0] + 1)
        g.end_line.append(node.end_point[0] + 1)
        g.tokens.append(self._tokens(node, t) if t in _TOKEN_TYPES else [])
        g.marks.append(0)
        return i

    def _tokens(self, node: Any, t: str) -> list[str]:
        if t in _LEAF_TYPES:
            return subtokens(node.text.decode("utf-8", "replace")) if t == "identifier" else [t]
        if t == "string":
            content = b" ".join(c.text for c in node.children if c.type in ("string_start", "string_content"))
            return subtokens(content.decode("utf-8", "replace"))
        if t in _OPERATOR_TYPES:
            return [c.type for c in node.children if not c.is_named][:SUBTOKENS_PER_NODE]
        return []

    def idx(self, node: Any) -> int | None:
        return self.index.get(node.id)

    def edge(self, src: Any, dst: Any, kind: str) -> None:
        a, b = self.idx(src), self.idx(dst)
        if a is not None and b is not None and a != b:
            self.g.edges.append((a, b, EDGE_ID[kind]))

    # -- marks and call edges --------------------------------------------------
    def mark_and_link_calls(self) -> None:
        rules = taint_rules()
        for i, (node, t) in enumerate(zip(self.nodes, self.g.types)):
            if t == "call":
                self._mark_call(i, node)
            elif t in ("attribute", "subscript"):
                name = dotted(node) if t == "attribute" else None
                if name and _is_source_attribute(name):
                    self.g.marks[i] |= MARK_BIT["source"]
            elif t == "parameters" and any(r.get("parameters") for r in rules["sources"]):
                for p in node.named_children:
                    ident = p if p.type == "identifier" else p.child_by_field_name("name") or (
                        p.named_children[0] if p.named_children else None)
                    if ident is not None and ident.text not in (b"self", b"cls") and self.idx(ident) is not None:
                        self.g.marks[self.idx(ident)] |= MARK_BIT["source"]

    def _mark_call(self, i: int, node: Any) -> None:
        fn, args = node.child_by_field_name("function"), node.child_by_field_name("arguments")
        callee = callee_name(fn) if fn is not None else None
        arg_nodes = [a for a in (args.named_children if args is not None else []) if a.type != "comment"]
        values = [a.child_by_field_name("value") or a if a.type == "keyword_argument" else a for a in arg_nodes]
        for v in values:
            self.edge(v, node, "call")
        matching = _call_rules(callee) if callee else ()
        if not matching:
            return
        positional = [v for a, v in zip(arg_nodes, values) if a.type != "keyword_argument"]
        keywords = {a.text.decode("utf-8", "replace").replace(" ", "") for a in arg_nodes
                    if a.type == "keyword_argument"}
        text = _compact(args) if any("if_text" in r or "unless_text" in r for _, r in matching) else ""
        applicable = [(mark, rule) for mark, rule in matching if _applies(rule, keywords, len(positional), text)]
        if any(rule.get("safe") for _, rule in applicable):  # a safe API (defusedxml, yaml.safe_load) is no sink
            applicable = [(mark, rule) for mark, rule in applicable if mark != "sink"]
        for mark, rule in applicable:
            self.g.marks[i] |= MARK_BIT[mark]
            if mark == "sink":  # "args": the positions that are injection points (execute's query, not its params)
                if rule.get("cwe"):
                    self.g.sink_cwes.setdefault(i, rule["cwe"])
                points = [positional[k] for k in rule["args"] if k < len(positional)] if "args" in rule else values
                self.sink_args.setdefault(i, []).append(
                    ([j for j in map(self.idx, points) if j is not None], bool(rule.get("injection")),
                     bool(rule.get("unconditional"))))

    # -- taint analysis ------------------------------------------------------------
    def propagate_taint(self) -> None:
        """Forward taint from sources along data-flow, call and value-carrying AST edges.

        A sanitizer's result is clean, so taint never leaves a sanitizer node.  Taint
        that went through string building (``+`` / ``%``, f-strings, ``.format``,
        ``.join``) is *injected*: it became part of a string some interpreter parses.
        A sink call whose injection point (any argument, or those its rule names: the
        query of ``execute(q, params)``, not the bound parameters) is tainted — for
        ``injection`` rules such as name-matched project wrappers, injected — gets
        ``tainted_sink``: the pattern a fix removes.  An ``unconditional`` sink (an API
        or setting that is the weakness itself: ``yaml.load`` without a safe loader,
        ``pickle.loads``, ``XMLParser(resolve_entities=True)``) is a tainted sink
        whatever flows into it.
        """
        g, marks = self.g, self.g.marks
        flows: list[list[int]] = [[] for _ in range(g.num_nodes)]
        ast, dfg, call = EDGE_ID["ast"], EDGE_ID["dfg"], EDGE_ID["call"]
        for s, d, t in g.edges:
            if t in (dfg, call):
                flows[s].append(d)
            elif t == ast and g.types[s] in VALUE_CARRIERS:
                flows[d].append(s)  # a child's value flows into the expression that contains it
        source, sanitizer = MARK_BIT["source"], MARK_BIT["sanitizer"]
        tainted = self._reach([i for i, m in enumerate(marks) if m & source and not m & sanitizer], flows)
        injected = self._reach([i for i in tainted if self._builds_string(i)], flows)
        for i in tainted:
            marks[i] |= MARK_BIT["tainted"]
        for i, rules in self.sink_args.items():
            if any(always or any(a in (injected if injection else tainted) for a in points)
                   for points, injection, always in rules):
                marks[i] |= MARK_BIT["tainted_sink"]

    def _reach(self, seeds: list[int], flows: list[list[int]]) -> set[int]:
        """Nodes reachable from ``seeds`` along ``flows`` without entering a sanitizer."""
        sanitizer, marks = MARK_BIT["sanitizer"], self.g.marks
        seen: set[int] = set()
        stack = list(seeds)
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            stack.extend(j for j in flows[i] if j not in seen and not marks[j] & sanitizer)
        return seen

    def _builds_string(self, i: int) -> bool:
        t = self.g.types[i]
        if t in ("binary_operator", "concatenated_string"):
            return True
        if t == "string":
            return any(c.type == "interpolation" for c in self.nodes[i].children)
        if t == "call":
            fn = self.nodes[i].child_by_field_name("function")
            attr = fn.child_by_field_name("attribute") if fn is not None and fn.type == "attribute" else None
            return attr is not None and attr.text in (b"format", b"join", b"replace")
        return False

    # -- control flow ------------------------------------------------------------
    def statements(self, block: Any) -> list[Any]:
        return [c for c in block.named_children if c.type != "comment"]

    def cfg_block(self, block: Any | None, preds: list[Any]) -> list[Any]:
        if block is None:
            return preds
        stmts = self.statements(block) if block.type in ("block", "module") else [block]
        for stmt in stmts:
            for p in preds:
                self.edge(p, stmt, "cfg")
            preds = self.cfg_stmt(stmt)
        return preds

    def cfg_stmt(self, stmt: Any) -> list[Any]:
        t = stmt.type
        if t == "decorated_definition":
            stmt = stmt.child_by_field_name("definition") or stmt
            t = stmt.type
        if t in ("function_definition", "class_definition"):
            self.cfg_block(stmt.child_by_field_name("body"), [stmt])
            return [stmt]
        if t == "if_statement":
            exits = self.cfg_block(stmt.child_by_field_name("consequence"), [stmt])
            has_else = False
            for alt in stmt.children_by_field_name("alternative"):
                body = alt.child_by_field_name("consequence") or alt.child_by_field_name("body")
                exits += self.cfg_block(body, [alt])
                self.edge(stmt, alt, "cfg")
                has_else |= alt.type == "else_clause"
            return exits if has_else else exits + [stmt]
        if t in ("for_statement", "while_statement"):
            for last in self.cfg_block(stmt.child_by_field_name("body"), [stmt]):
                self.edge(last, stmt, "cfg")
            alt = stmt.child_by_field_name("alternative")
            return self.cfg_block(alt.child_by_field_name("body"), [stmt]) if alt is not None else [stmt]
        if t == "try_statement":
            exits = self.cfg_block(stmt.child_by_field_name("body"), [stmt])
            for clause in stmt.named_children:
                if clause.type in ("except_clause", "else_clause", "finally_clause"):
                    body = next((c for c in clause.named_children if c.type == "block"), None)
                    self.edge(stmt, clause, "cfg")
                    exits += self.cfg_block(body, [clause])
            return exits
        if t == "with_statement":
            return self.cfg_block(stmt.child_by_field_name("body"), [stmt])
        if t in ("return_statement", "raise_statement", "break_statement", "continue_statement"):
            return []
        return [stmt]

    # -- data flow -----------------------------------------------------------------
    def uses(self, node: Any) -> Iterable[tuple[str, Any]]:
        """(name, node) for every variable or attribute read inside ``node``."""
        stack = [node]
        while stack:
            n = stack.pop()
            if n.type == "identifier":
                parent = n.parent
                if parent is not None and parent.type == "attribute" and parent.child_by_field_name("attribute") == n:
                    continue
                if parent is not None and parent.type == "keyword_argument" and parent.child_by_field_name("name") == n:
                    continue
                yield n.text.decode("utf-8", "replace"), n
            elif n.type == "attribute":
                name = dotted(n)
                if name:
                    yield name, n
            if n.type not in ("function_definition", "class_definition", "lambda"):
                stack.extend(n.named_children)

    def targets(self, node: Any | None) -> Iterable[tuple[str, Any, bool]]:
        """(name, node, strong) for names bound by an assignment target."""
        if node is None:
            return
        if node.type == "identifier":
            yield node.text.decode("utf-8", "replace"), node, True
        elif node.type == "attribute" and dotted(node):
            yield dotted(node), node, True
        elif node.type == "subscript":
            base = node.child_by_field_name("value")
            if base is not None and dotted(base):
                yield dotted(base), base, False  # d[k] = v updates d, does not replace it
        elif node.type in ("pattern_list", "tuple_pattern", "list_pattern", "tuple", "list",
                           "as_pattern_target", "list_splat_pattern", "parenthesized_expression"):
            for c in node.named_children:
                yield from self.targets(c)

    def dfg_block(self, block: Any | None, defs: dict[str, set[int]]) -> dict[str, set[int]]:
        if block is None:
            return defs
        stmts = self.statements(block) if block.type in ("block", "module") else [block]
        for stmt in stmts:
            defs = self.dfg_stmt(stmt, defs)
        return defs

    def _read(self, expr: Any | None, defs: dict[str, set[int]]) -> None:
        if expr is None:
            return
        for name, node in self.uses(expr):
            for d in defs.get(name, ()):
                j = self.idx(node)
                if j is not None and d != j:
                    self.g.edges.append((d, j, EDGE_ID["dfg"]))

    def _bind(self, target: Any | None, value: Any | None, defs: dict[str, set[int]]) -> dict[str, set[int]]:
        defs = {k: set(v) for k, v in defs.items()}
        for name, node, strong in self.targets(target):
            j = self.idx(node)
            if j is None:
                continue
            if value is not None:
                self.edge(value, node, "dfg")
            defs[name] = ({j} if strong else defs.get(name, set()) | {j})
        return defs

    def dfg_stmt(self, stmt: Any, defs: dict[str, set[int]]) -> dict[str, set[int]]:
        t = stmt.type
        if t == "decorated_definition":
            return self.dfg_stmt(stmt.child_by_field_name("definition") or stmt, defs)
        if t == "function_definition":
            inner = dict(defs)
            params = stmt.child_by_field_name("parameters")
            for p in params.named_children if params is not None else []:
                name = p if p.type == "identifier" else p.child_by_field_name("name") or (
                    p.named_children[0] if p.named_children else None)
                if name is not None and self.idx(name) is not None:
                    self._read(p.child_by_field_name("value"), defs)
                    inner[name.text.decode("utf-8", "replace")] = {self.idx(name)}
            self.dfg_block(stmt.child_by_field_name("body"), inner)
            return self._bind(stmt.child_by_field_name("name"), None, defs)
        if t == "expression_statement":
            for child in stmt.named_children:
                defs = self._dfg_expr(child, defs)
            only = stmt.named_children[0] if len(stmt.named_children) == 1 else None
            if only is not None and only.type == "call" and self._is_sanitizer(only):
                defs = _validated(defs, self._checked(only))  # validate_key(name): name is checked from here on
            return defs
        if t == "if_statement":
            return self.dfg_if(stmt, defs)
        if t == "for_statement":
            self._read(stmt.child_by_field_name("right"), defs)
            loop = self._bind(stmt.child_by_field_name("left"), stmt.child_by_field_name("right"), defs)
            once = self.dfg_block(stmt.child_by_field_name("body"), loop)
            twice = self.dfg_block(stmt.child_by_field_name("body"), _merge([loop, once]))  # loop-carried
            return _merge([defs, once, twice])
        if t == "while_statement":
            self._read(stmt.child_by_field_name("condition"), defs)
            once = self.dfg_block(stmt.child_by_field_name("body"), defs)
            return _merge([defs, once])
        if t == "with_statement":
            for item in (c for clause in stmt.named_children if clause.type == "with_clause"
                         for c in clause.named_children):
                value = item.child_by_field_name("value")
                if value is not None and value.type == "as_pattern":
                    src = value.named_children[0] if value.named_children else None
                    self._read(src, defs)
                    defs = self._bind(value.child_by_field_name("alias"), src, defs)
                else:
                    self._read(value, defs)
            return self.dfg_block(stmt.child_by_field_name("body"), defs)
        if t == "try_statement":
            after = self.dfg_block(stmt.child_by_field_name("body"), defs)
            outs = [after]
            for clause in stmt.named_children:
                if clause.type in ("except_clause", "else_clause", "finally_clause"):
                    body = next((c for c in clause.named_children if c.type == "block"), None)
                    outs.append(self.dfg_block(body, _merge([defs, after])))
            return _merge(outs)
        if t == "class_definition":
            self.dfg_block(stmt.child_by_field_name("body"), dict(defs))
            return defs
        self._read(stmt, defs)
        return defs

    # -- guards: checks that validate a value for the code they protect -----------------------
    def dfg_if(self, stmt: Any, defs: dict[str, set[int]]) -> dict[str, set[int]]:
        """Reaching definitions through an ``if``, with its guards.

        A branch that leaves the function (``return``, ``raise``, ``abort()``, ``exit()``)
        passes no definition on.  A *guard* in the condition — a sanitizer call
        (``is_safe_url(u)``, ``p.startswith(base)``, ``validate(x)``) or an allow/deny-list
        membership test (``host in ALLOWED``, ``".." in path``) — validates the names it
        checks where the check passed: in that branch, and on the path that falls through
        a lone ``if`` (``if not ok(u): abort()`` or ``if not ok(u): u = "/"``) they are
        re-defined by the guard node (a sanitizer, so no taint flows on).  That is how
        real fixes of path traversal, open redirects and SSRF look.
        """
        cond = stmt.child_by_field_name("condition")
        self._read(cond, defs)
        passed, failed = self.guards(cond)
        consequence = stmt.child_by_field_name("consequence")
        out = self.dfg_block(consequence, _validated(defs, passed))
        leaves = self._exits(consequence)
        branches = [] if leaves else [out]
        has_else = False
        for alt in stmt.children_by_field_name("alternative"):
            inside = _validated(defs, failed)
            self._read(alt.child_by_field_name("condition"), inside)
            body = alt.child_by_field_name("consequence") or alt.child_by_field_name("body")
            out = self.dfg_block(body, inside)
            if not self._exits(body):
                branches.append(out)
            has_else |= alt.type == "else_clause"
        if not has_else:  # falling through past a lone ``if``: its condition was false
            alternatives = stmt.children_by_field_name("alternative")
            branches.append(defs if alternatives else _validated(defs, failed))
        return _merge(branches)

    def guards(self, cond: Any | None) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """(name, guard node) pairs valid where the condition holds, and where it does not."""
        passed: list[tuple[str, int]] = []
        failed: list[tuple[str, int]] = []
        stack = [(cond, False)] if cond is not None else []
        while stack:
            n, negated = stack.pop()
            if n.type == "not_operator":
                arg = n.child_by_field_name("argument")
                if arg is not None:
                    stack.append((arg, not negated))
                continue
            checked, holds = self._guard(n)
            if checked is not None:
                (passed if holds != negated else failed).extend(checked)
                continue
            if n.type not in ("lambda", "function_definition", "class_definition"):
                stack.extend((c, negated) for c in reversed(n.named_children))
        return passed, failed

    def _guard(self, n: Any) -> tuple[list[tuple[str, int]] | None, bool]:
        """(names checked, whether they are valid when ``n`` is true), or (None, _) for no guard."""
        if n.type == "call" and self._is_sanitizer(n):
            return self._checked(n), True
        if n.type != "comparison_operator" or len(n.named_children) != 2:
            return None, False
        ops = [c.type for c in n.children if not c.is_named]
        if ops not in (["in"], ["not in"]):
            return None, False
        j = self.idx(n)
        if j is None:
            return None, False
        left, right = n.named_children
        deny = left.type == "string"  # ".." in path: a deny-list; host in ALLOWED: an allow-list
        self.g.marks[j] |= MARK_BIT["sanitizer"]
        names = [(name, j) for name, _ in self.uses(right if deny else left)]
        return names, (ops == ["in"]) != deny

    def _is_sanitizer(self, node: Any) -> bool:
        j = self.idx(node)
        return j is not None and bool(self.g.marks[j] & MARK_BIT["sanitizer"])

    def _checked(self, call: Any) -> list[tuple[str, int]]:
        """Names a sanitizer call checks: its receiver (``p`` of ``p.startswith``) and its arguments."""
        j = self.idx(call)
        fn, args = call.child_by_field_name("function"), call.child_by_field_name("arguments")
        parts = [fn.child_by_field_name("object")] if fn is not None and fn.type == "attribute" else []
        return [(name, j) for part in parts + [args] if part is not None for name, _ in self.uses(part)]

    def _exits(self, block: Any | None) -> bool:
        """Whether a block's last statement leaves the function (return, raise, abort(), exit())."""
        if block is None:
            return False
        stmts = self.statements(block) if block.type in ("block", "module") else [block]
        if not stmts:
            return False
        last = stmts[-1]
        if last.type in ("return_statement", "raise_statement"):
            return True
        expr = last.named_children[0] if last.type == "expression_statement" and last.named_children else None
        fn = expr.child_by_field_name("function") if expr is not None and expr.type == "call" else None
        name = callee_name(fn) if fn is not None else None
        return bool(name) and name.rsplit(".", 1)[-1] in _EXIT_CALLS

    def _dfg_expr(self, expr: Any, defs: dict[str, set[int]]) -> dict[str, set[int]]:
        if expr.type == "assignment":
            right = expr.child_by_field_name("right")
            self._read(right, defs)
            return self._bind(expr.child_by_field_name("left"), right, defs)
        if expr.type == "augmented_assignment":
            left, right = expr.child_by_field_name("left"), expr.child_by_field_name("right")
            self._read(left, defs)
            self._read(right, defs)
            previous = {k: set(v) for k, v in defs.items()}
            out = self._bind(left, right, defs)
            for name, _, _ in self.targets(left):
                out[name] |= previous.get(name, set())
            return out
        self._read(expr, defs)
        return defs


#: Calls that leave the function as ``raise`` does (Flask's ``abort``, ``sys.exit``).
_EXIT_CALLS = frozenset({"abort", "exit", "_exit"})


def _validated(defs: dict[str, set[int]], checked: list[tuple[str, int]]) -> dict[str, set[int]]:
    """``defs`` with every checked name re-defined by its guard node."""
    if not checked:
        return defs
    out = {k: set(v) for k, v in defs.items()}
    for name, j in checked:
        out[name] = {j}
    return out


def _merge(states: list[dict[str, set[int]]]) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for state in states:
        for name, nodes in state.items():
            out.setdefault(name, set()).update(nodes)
    return out


def build_graph(code: str) -> ProgramGraph:
    """The program graph of one function or module (edges de-duplicated, sorted)."""
    tree = parse(code)
    b = _Builder(code)
    b.collect(tree.root_node)
    b.mark_and_link_calls()
    b.cfg_block(tree.root_node, [])
    b.dfg_block(tree.root_node, {})
    b.g.edges = sorted(set(b.g.edges))
    b.propagate_taint()
    return b.g


def ast_only(graph: ProgramGraph) -> ProgramGraph:
    """The same graph with only AST edges and no marks (the ablation baseline)."""
    return ProgramGraph(graph.types, graph.start_line, graph.end_line, graph.tokens, [0] * graph.num_nodes,
                        [e for e in graph.edges if e[2] == EDGE_ID["ast"]])
