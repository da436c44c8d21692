"""Program graphs: typed edges, data flow through string building, taint marks, stable features."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streamguard_ml.graphs import EDGE_TYPES, ast_only, build_graph, first_error_line, vocabulary

RULE_MARKS = ("source", "sink", "sanitizer")
CODE = '''def lookup(conn, name):
    uid = request.args.get("id")
    q = f"SELECT * FROM t WHERE id = {uid}"
    q2 = "SELECT %s" % name
    q3 = "SELECT {}".format(q2)
    q4 = "x" + q3
    cur = conn.cursor()
    if uid:
        cur.execute(q)
    else:
        cur.execute("SELECT ?", (uid,))
    for row in cur.fetchall():
        print(row)
    subprocess.run(q4, shell=True)
    return shlex.quote(name)
'''


def _flows(graph):
    """(src line, src text, dst line, dst text) for every dfg edge."""
    j = graph.to_json()
    nodes = j["nodes"]
    return {(nodes[e["src"]]["start_line"], " ".join(nodes[e["src"]]["tokens"]),
             nodes[e["dst"]]["start_line"], " ".join(nodes[e["dst"]]["tokens"]))
            for e in j["edges"] if e["type"] == "dfg"}


def test_all_edge_types_present():
    g = build_graph(CODE)
    kinds = {EDGE_TYPES[t] for _, _, t in g.edges}
    assert kinds == {"ast", "cfg", "dfg", "call"}


def test_def_use_through_fstring_percent_format_and_concat():
    flows = _flows(build_graph(CODE))
    assert (2, "uid", 3, "uid") in flows          # into the f-string
    assert (1, "name", 4, "name") in flows        # % formatting
    assert (4, "q 2", 5, "q 2") in flows          # .format (sub-tokens: q2 → q 2)
    assert (5, "q 3", 6, "q 3") in flows          # concatenation
    assert (3, "q", 9, "q") in flows              # reaches the sink inside the if branch
    assert (6, "q 4", 14, "q 4") in flows


def test_marks_from_the_rule_table():
    g = build_graph(CODE).to_json()
    marked = {(n["start_line"], n["type"], tuple(m for m in n["marks"] if m in RULE_MARKS))
              for n in g["nodes"] if n["marks"]}
    assert (2, "attribute", ("source",)) in marked                  # request.args
    assert (1, "identifier", ("source",)) in marked                 # parameters
    assert (9, "call", ("sink",)) in marked                         # execute(q)
    assert (11, "call", ("sink", "sanitizer")) in marked            # parameterised execute
    assert (14, "call", ("sink",)) in marked                        # subprocess with shell=True
    assert (15, "call", ("sanitizer",)) in marked                   # shlex.quote


def _sinks(code):
    """(line, is tainted_sink) for every sink call."""
    return {(n["start_line"], "tainted_sink" in n["marks"]) for n in build_graph(code).to_json()["nodes"]
            if "sink" in n["marks"]}


def test_taint_reaches_sinks_through_string_building_but_not_through_sanitizers():
    assert _sinks(CODE) == {(9, True), (11, False), (14, True)}  # the parameterised execute is safe
    fixed = {
        "def f(conn):\n    uid = request.args.get('id')\n    conn.cursor().execute('SELECT ?', (uid,))\n": False,
        "def f(conn):\n    uid = request.args.get('id')\n    conn.cursor().execute(f'SELECT {uid}')\n": True,
        "def f(name):\n    os.system('ls ' + shlex.quote(name))\n": False,
        "def f(name):\n    os.system('ls ' + name)\n": True,
        "def f(name):\n    safe = os.path.basename(name)\n    return open('/srv/' + safe)\n": False,
        "def f(name):\n    p = '/srv/%s' % name\n    return open(p)\n": True,
        "def f():\n    return open('/etc/motd')\n": False,  # a sink no source reaches
    }
    for code, vulnerable in fixed.items():
        assert {flag for _, flag in _sinks(code)} == {vulnerable}, code


def test_injection_points_builtins_and_project_wrappers():
    cases = {
        # execute's query is the injection point, its bound parameters are not
        "def f(c, x):\n    c.execute('SELECT ' + x, (1,))\n": True,
        "def f(c, x):\n    c.execute('SELECT :x', x=x)\n": False,
        # eval / exec / open are builtins: db.exec(sql, args) is not Python's exec
        "def f(db, sql, args):\n    db.exec(sql, args)\n": False,
        # a project wrapper named like a command runner: a string built from input is injection...
        "def f(self, name):\n    self._run_ssh('ls %s' % name)\n": True,
        # ...an argument list is not
        "def f(self, name):\n    self._run_ssh(['ls', name])\n": False,
    }
    for code, vulnerable in cases.items():
        assert any(flag for _, flag in _sinks(code)) == vulnerable, code


def test_tainted_values_follow_data_flow_only():
    nodes = build_graph("def f(x):\n    y = x.strip()\n    z = 'constant'\n    return y, z\n").to_json()["nodes"]
    tainted = {" ".join(n["tokens"]) for n in nodes if n["type"] == "identifier" and "tainted" in n["marks"]}
    assert {"x", "y"} <= tainted and "z" not in tainted


def test_subprocess_without_shell_is_not_a_sink():
    g = build_graph("def f(x):\n    subprocess.run(['ls', x])\n").to_json()
    assert not any("sink" in n["marks"] for n in g["nodes"])


def test_cfg_has_branches_and_loop_back_edge():
    g = build_graph(CODE).to_json()
    nodes = g["nodes"]
    cfg = {(nodes[e["src"]]["start_line"], nodes[e["dst"]]["start_line"]) for e in g["edges"] if e["type"] == "cfg"}
    assert (8, 9) in cfg and (8, 10) in cfg   # if → then, if → else
    assert (13, 12) in cfg                     # loop body → loop header
    assert (12, 14) in cfg                     # loop exit


def test_json_shape_and_ast_only_ablation():
    j = build_graph(CODE).to_json()
    assert set(j["nodes"][0]) >= {"id", "type", "start_line", "end_line", "marks"}
    assert set(j["edges"][0]) == {"src", "dst", "type"}
    bare = ast_only(build_graph(CODE))
    assert {EDGE_TYPES[t] for _, _, t in bare.edges} == {"ast"} and not any(bare.marks)


def test_features_are_stable_across_processes():
    """Node types come from the versioned vocabulary and sub-tokens from CRC-32, never hash()."""
    script = ("import json; from streamguard_ml.graphs import build_graph;"
              f"g = build_graph({CODE!r}); print(json.dumps([g.type_ids(), g.token_buckets()]))")
    runs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout for seed in (1, 2)}
    assert len(runs) == 1
    type_ids, _ = json.loads(runs.pop())
    assert 0 not in type_ids  # every node type is in the vocabulary
    assert vocabulary()["version"].startswith("py-ts")


def test_syntax_errors_are_located():
    assert first_error_line("def f(:\n    pass\n") == 1
    assert first_error_line("def f():\n    return (1,\n\nx = 2\n") is not None
    assert first_error_line(CODE) is None


def _tainted_sink_lines(code):
    from streamguard_ml.graphs import MARK_BIT

    g = build_graph(code)
    return sorted({g.start_line[i] for i, m in enumerate(g.marks) if m & MARK_BIT["tainted_sink"]})


#: Per vulnerability class: (vulnerable function, its fix). The rules flag the first and not the second.
CLASS_PAIRS = {
    "CWE-89 sql injection": (
        "def f(db):\n    q = 'SELECT * FROM t WHERE n = ' + request.args['n']\n    return pd.read_sql(q, db)\n",
        "def f(db):\n    q = 'SELECT * FROM t WHERE n = %s'\n    return pd.read_sql(q, db, params=[request.args['n']])\n"),
    "CWE-78 command injection": (
        "def f():\n    return subprocess.getoutput('ping ' + request.args['host'])\n",
        "def f():\n    return subprocess.run(['ping', request.args['host']], capture_output=True)\n"),
    "CWE-22 path traversal (guard)": (
        "def f():\n    name = request.args['f']\n    return open(os.path.join(BASE, name)).read()\n",
        "def f():\n    name = request.args['f']\n    if '..' in name:\n        abort(400)\n"
        "    return open(os.path.join(BASE, name)).read()\n"),
    "CWE-22 zip slip": ("def f(tar, dest):\n    tar.extractall(dest)\n",
                        "def f(tar, dest):\n    tar.extractall(dest, filter='data')\n"),
    "CWE-79 xss (mark_safe)": ("def f(request):\n    return mark_safe('<b>' + request.GET['q'] + '</b>')\n",
                               "def f(request):\n    return format_html('<b>{}</b>', request.GET['q'])\n"),
    "CWE-79 xss (|safe)": ("def f():\n    return render_template_string('<p>{{ c|safe }}</p>', c=request.args['c'])\n",
                           "def f():\n    return render_template_string('<p>{{ c }}</p>', c=request.args['c'])\n"),
    "CWE-79 xss (autoescape)": ("def f():\n    env = Environment(loader=L, autoescape=False)\n    return env\n",
                                "def f():\n    env = Environment(loader=L, autoescape=True)\n    return env\n"),
    "CWE-94 code injection": ("def f():\n    return eval(request.form['expr'])\n",
                              "def f():\n    return ast.literal_eval(request.form['expr'])\n"),
    "CWE-94 compile": ("def f(src):\n    return compile(src, '<rule>', 'exec')\n",
                       "def f(src):\n    return ast.parse(src)\n"),
    "CWE-502 pickle": ("def f(blob):\n    return pickle.loads(base64.b64decode(blob))\n",
                       "def f(blob):\n    return json.loads(base64.b64decode(blob))\n"),
    "CWE-502 yaml": ("def f(path):\n    with open(CONFIG) as fh:\n        return yaml.load(fh)\n",
                     "def f(path):\n    with open(CONFIG) as fh:\n        return yaml.load(fh, Loader=yaml.SafeLoader)\n"),
    "CWE-502 marshal/jsonpickle/shelve": (
        "def f(d):\n    a = marshal.loads(d)\n    b = jsonpickle.decode(d)\n    return shelve.open(d), a, b\n",
        "def f(d):\n    return json.loads(d)\n"),
    "CWE-611 xxe (lxml)": ("def f():\n    return etree.fromstring(request.data)\n",
                           "def f():\n    return defusedxml.ElementTree.fromstring(request.data)\n"),
    "CWE-611 xxe (parser)": (
        "def f(x):\n    p = etree.XMLParser(resolve_entities=True)\n    return etree.fromstring(x, p)\n",
        "def f(x):\n    p = etree.XMLParser(resolve_entities=False)\n    return etree.fromstring(x, p)\n"),
    "CWE-611 xxe (sax)": ("def f(p, x):\n    p.setFeature(feature_external_ges, True)\n    p.parse(x)\n",
                          "def f(p, x):\n    p.setFeature(feature_external_ges, False)\n    p.parse(x)\n"),
    "CWE-918 ssrf (allow-list)": (
        "def f():\n    url = request.args['url']\n    return requests.get(url, timeout=5)\n",
        "def f():\n    url = request.args['url']\n    if urlparse(url).hostname not in ALLOWED_HOSTS:\n"
        "        raise ValueError(url)\n    return requests.get(url, timeout=5)\n"),
    "CWE-918 ssrf (urllib)": ("def f(host):\n    return urlopen('http://' + host + '/status')\n",
                              "def f(host):\n    return urlopen(STATUS_URL, timeout=3)\n"),
    "CWE-601 open redirect": (
        "def f(request):\n    nxt = request.GET.get('next')\n    return HttpResponseRedirect(nxt)\n",
        "def f(request):\n    nxt = request.GET.get('next')\n"
        "    if not url_has_allowed_host_and_scheme(nxt, allowed_hosts={request.get_host()}):\n"
        "        nxt = '/'\n    return HttpResponseRedirect(nxt)\n"),
    "CWE-601 redirect (url_for)": ("def f():\n    return redirect(request.args['next'])\n",
                                   "def f():\n    return redirect(url_for('home', next=request.args['next']))\n"),
    "CWE-1336 template injection": (
        "def f(name):\n    return Template('Hello ' + name).render()\n",
        "def f(name):\n    return render_template('hello.html', name=name)\n"),
}


@pytest.mark.parametrize("label", sorted(CLASS_PAIRS))
def test_each_vulnerability_class_is_flagged_and_its_fix_is_not(label):
    vulnerable, fixed = CLASS_PAIRS[label]
    assert _tainted_sink_lines(vulnerable), f"{label}: the vulnerable version is not flagged"
    assert not _tainted_sink_lines(fixed), f"{label}: the fix is still flagged"


def test_guards_validate_only_where_the_check_passed():
    code = '''def f():
    u = request.args["u"]
    if is_safe_url(u):
        ok = redirect(u)
    else:
        bad = redirect(u)
    if not is_safe_url(u):
        still = redirect(u)
    return u
'''
    assert _tainted_sink_lines(code) == [6, 8]
    # a check whose failing branch leaves protects what follows; one that only logs does not
    leaves = "def f(p):\n    if not p.startswith(BASE):\n        abort(403)\n    return open(p).read()\n"
    logs = "def f(p):\n    if not p.startswith(BASE):\n        log.warning(p)\n    return open(p).read()\n"
    assert not _tainted_sink_lines(leaves) and _tainted_sink_lines(logs) == [4]
    # a validator called as a statement checks its argument from there on
    assert _tainted_sink_lines("def f(k):\n    validate_key(k)\n    return open(k)\n") == []
    assert _tainted_sink_lines("def f(k):\n    x = open(k)\n    validate_key(k)\n    return x\n") == [2]


def test_a_branch_that_leaves_passes_no_definition_on():
    code = "def f(a):\n    q = 'SELECT 1'\n    if a:\n        q = 'SELECT ' + a\n        return cur.execute(q)\n    cur.execute(q)\n"
    assert _tainted_sink_lines(code) == [5]


def test_safe_apis_are_never_sinks_and_sanitizer_wrappers_are_recognised():
    assert not _tainted_sink_lines("def f(x):\n    return send_from_directory(UPLOADS, x)\n")
    assert not _tainted_sink_lines("def f(x):\n    return open(sanitize_path(x))\n")
    assert not _tainted_sink_lines("def f(s):\n    return string.Template(s).substitute(a=1)\n")
    assert _tainted_sink_lines("def f(x):\n    return np.load(x, allow_pickle=True)\n")
    assert not _tainted_sink_lines("def f(x):\n    return np.load(BASE_NPY)\n")
