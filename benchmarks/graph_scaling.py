"""Graph building on pathological inputs: the C builder's time as a multiple of tree-sitter's parse.

Parsing is linear, so measuring the build beside the parse of the same input, in the
same run, cancels the machine's load out: a superlinear step in the builder shows as
a ratio that grows with the input.  Two inputs that used to be quadratic (issue 17):

* a chain of conditionals reading one variable thousands of times
  (``return x if c else x if c else ...``): the edge sort was an insertion sort per node;
* thousands of ``if`` statements each defining a name: merging definitions scanned the
  merged list per name.

``python benchmarks/graph_scaling.py``; the last line is
``RESULT chain_ratio=X ifs_ratio=Y`` (build seconds ÷ parse seconds at the largest size).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable


def conditional_chain(items: int) -> str:
    return "def f(x, c):\n    return " + " if c else ".join(["x"] * items) + "\n"


def if_statements(items: int) -> str:
    return "def f(x):\n" + "".join(f"    if x:\n        a{i} = x\n" for i in range(items))


def best_seconds(work: Callable[[], object], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def ratio(code: str, runs: int) -> tuple[float, float]:
    from streamguard_ml import fastgraph
    from streamguard_ml.graphs import parse

    native = fastgraph._native()
    if native is None:
        raise SystemExit("the C graph builder is not built: pip install -e . (it compiles native/fastgraph.c)")
    encoded = code.encode()
    return best_seconds(lambda: parse(code), runs), best_seconds(lambda: native.build([encoded]), runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="best of this many runs per measurement")
    args = p.parse_args()
    last: dict[str, float] = {}
    for name, make, sizes in (("chain", conditional_chain, (10_000, 40_000, 80_000)),
                              ("ifs", if_statements, (500, 1_000, 2_000))):
        for n in sizes:
            code = make(n)
            parsing, building = ratio(code, args.runs)
            last[name] = building / parsing
            print(f"{name:<6} n={n:>6} ({len(code) / 1e3:7.0f} KB): parse {parsing:.3f} s, "
                  f"C build {building:.3f} s, ratio {last[name]:.1f}", flush=True)
    print(f"RESULT chain_ratio={last['chain']:.2f} ifs_ratio={last['ifs']:.2f}")


if __name__ == "__main__":
    main()
