"""The C graph builder builds exactly the graphs graphs.py builds, and hands back what it must."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamguard_ml import fastgraph
from streamguard_ml.dataset import pack_graphs
from streamguard_ml.graphs import build_graph
from streamguard_ml.sources.synthetic import generate_records

#: Every construct graphs.py treats specially, plus the odd inputs real corpora hold.
TRICKY = [
    "",
    "x = 1\n",
    '''@app.route("/u")
@login_required
def handler(req, *args, limit: int = 10, **kw):
    """Doc."""
    uid = request.args.get("id")  # a comment
    path = os.path.join(BASE, uid)
    data = open(path).read()
    q = f"SELECT {uid!r} FROM t WHERE n = {kw['n']}"
    q += " AND x = %s" % limit
    cur.execute(q)
    cur.execute("SELECT ?", (uid,))
    subprocess.call(uid, shell = True)
    subprocess.run(["ls", uid])
    os.system("rm " + shlex.quote(uid))
    self._run_ssh("echo " + uid)
    db.exec(sql, args)
    eval(uid)
    return render_template_string("<b>%s</b>" % html.escape(uid))
''',
    '''class Repo(Base):
    table = "t"

    def get(self, key):
        for i, (a, b) in enumerate(self.rows):
            if a == key:
                break
            elif b:
                continue
            else:
                pass
        else:
            i = -1
        while i < 3:
            i += 1
        try:
            v = self.cache[key]
        except KeyError as exc:
            v = None
        except (ValueError, TypeError):
            raise
        else:
            v = v or 0
        finally:
            self.close()
        with open(key) as fh, lock:
            v = fh.read()
        self.d[key] = v
        self.obj.attr = lambda z: z + v
        x, *rest = [v, 1, 2]
        [y for y in rest if y > v]
        return {k: v for k in rest}
''',
    "def f(x):\n    global g\n    g = x if x else not x\n    assert x is not None, 'no'\n    del x\n    yield from g\n",
    "HTTPServer getHTTPResponseCode XMLHttpRequest abc123Def __init__ x_1 ABC a.b.c.d().e(f)(g)[h]\n",
    "def broken(:\n    return (\n",
    "s = 'a' 'b' \"c\" f'{x:>{w}}' rb'\\x00' '''multi\nline'''\nt = '\\\\n\\t'\n",
    "async def f(url):\n    async with session.get(url) as r:\n        return await r.text()\n",
    "match cmd:\n    case [\"go\", d]:\n        run(d)\n    case _:\n        pass\n",
    "x = " + "(" * 60 + "1" + ")" * 60 + "\n",
    # guards, rule conditions (if_text / unless_text / keyword), unconditional and safe rules
    '''def view(request, name, host):
    nxt = request.args.get("next")
    if not url_has_allowed_host_and_scheme(nxt, allowed_hosts=ALLOWED) or nxt.startswith("//"):
        nxt = "/"
    elif ".." in name:
        abort(404)
    else:
        validate_name(name)
    if host not in ALLOWED_HOSTS:
        raise PermissionError(host)
    if is_safe_url(nxt) and "x" not in name:
        return redirect(nxt)
    validate_path(name)
    if not (name or host):
        sys.exit(1)
    cfg = yaml.load(open(name), Loader=yaml.SafeLoader)
    raw = yaml.load(request.data)
    doc = defusedxml.ElementTree.fromstring(request.data)
    tree = etree.fromstring(request.data, etree.XMLParser(resolve_entities=False))
    bad = etree.XMLParser(resolve_entities=True)
    parser.setFeature(feature_external_ges, True)
    arr = np.load(name, allow_pickle=True)
    html = render_template_string("<p>{{ x|safe }}</p>", x=name)
    return requests.get("http://" + host, timeout=5), pickle.loads(raw)
''',
]


def _assert_arrays_equal(got, expected):
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert value.dtype == got[key].dtype, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def _assert_same(codes):
    fast, errors = fastgraph.graph_arrays(codes)
    assert errors == [None] * len(codes)
    _assert_arrays_equal(fast, pack_graphs([build_graph(c) for c in codes]))


def test_the_extension_is_built():
    assert fastgraph.available(), ("streamguard_ml._fastgraph is missing: reinstall with a C compiler "
                                   "(`pip install -e .` compiles native/fastgraph.c)")


@pytest.mark.parametrize("index", range(len(TRICKY)))
def test_same_graph_as_graphs_py_for_each_construct(index):
    _assert_same([TRICKY[index]])


def test_same_graphs_for_a_generated_corpus():
    codes = [r["code"] for r in generate_records(300, seed=5)]
    _assert_same(codes + TRICKY)


def test_unicode_and_deep_nesting_are_built_by_graphs_py_in_place():
    deep = "x = a" + ".b" * 5000 + "\n"
    codes = ["y = 1\n", "name = 'Zoë'  # Unicode: graphs.py decides\nprint(ÉTAT)\n", deep, "z = 2\n",
             "bad = '\ud800'\n"]
    fast, errors = fastgraph.graph_arrays(codes)
    assert errors[0] is None and errors[1] is None and errors[3] is None
    assert errors[2].startswith("RecursionError") and errors[4].startswith("UnicodeEncodeError")
    _assert_arrays_equal(fast, pack_graphs([build_graph(codes[i]) for i in (0, 1, 3)]))


def test_threads_build_the_same_graphs_side_by_side():
    codes = [r["code"] for r in generate_records(200, seed=9)]
    expected, _ = fastgraph.graph_arrays(codes)
    results: list = [None] * 4

    def work(k):
        results[k] = fastgraph.graph_arrays(codes)[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        _assert_arrays_equal(got, expected)


def test_without_the_extension_graphs_py_builds_everything(monkeypatch):
    """An install without a C compiler still preprocesses (slower), with the same graphs."""
    codes = [r["code"] for r in generate_records(20, seed=3)] + ["bad = '\ud800'\n"]
    expected, expected_errors = fastgraph.graph_arrays(codes)
    monkeypatch.setattr(fastgraph, "_native", lambda: None)
    assert not fastgraph.available()
    got, errors = fastgraph.graph_arrays(codes)
    assert errors == expected_errors and errors[-1].startswith("UnicodeEncodeError")
    _assert_arrays_equal(got, expected)


def _conditional_chain(items: int) -> str:
    """``return x if c else x if c else ...``: one parameter read all along a chain of conditionals."""
    return "def f(x, c):\n    return " + " if c else ".join(["x"] * items) + "\n"


def _if_statements(items: int) -> str:
    """A few thousand ``if``/``elif`` statements, each defining its own name (every one merges the definitions)."""
    return "def f(x):\n" + "".join(f"    if x:\n        a{i} = x\n    elif a{i // 2}:\n        x = a{i}\n"
                                   for i in range(items))


def test_same_graphs_for_long_conditional_chains_and_if_sequences():
    _assert_same([_conditional_chain(3000), _if_statements(300),
                  "def f(x):\n    y = " + "x if (" * 300 + "x" + ") else x" * 300 + "\n    return y\n"])
