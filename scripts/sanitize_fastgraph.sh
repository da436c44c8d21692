#!/usr/bin/env bash
# Run the C graph builder under AddressSanitizer + UndefinedBehaviorSanitizer.
#
# Builds native/fastgraph.c with -fsanitize=address,undefined into a temporary
# directory, swaps it in for the installed extension for the duration of the run,
# and runs tests/test_fastgraph.py plus (when the SVEN folder exists) a parity
# sweep over real code.  Any out-of-bounds access or UB aborts with a report.
#
#     scripts/sanitize_fastgraph.sh            # after `make install`
#
# Run it after every change to native/fastgraph.c: the clean-clone CI once caught an
# out-of-bounds table read that happened to return 0 on one machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
target=$($PY -c 'import streamguard_ml._fastgraph as m; print(m.__file__)')
tmp=$(mktemp -d)
trap 'cp "$tmp/installed.so" "$target"; rm -rf "$tmp"' EXIT
cp "$target" "$tmp/installed.so"
gcc -shared -fPIC -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -std=gnu11 -D_DEFAULT_SOURCE \
    -Inative/tree-sitter/include -Inative/tree-sitter/src $($PY -c 'import sysconfig; print("-I" + sysconfig.get_paths()["include"])') \
    native/fastgraph.c native/tree-sitter/src/lib.c -o "$tmp/sanitized.so"
cp "$tmp/sanitized.so" "$target"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
$PY -m pytest -q -p no:cacheprovider tests/test_fastgraph.py
if [ -d ../shared/datasets/sven-train ]; then
    $PY - <<'EOF'
import tempfile

import numpy as np

from streamguard_ml import fastgraph, layout
from streamguard_ml.dataset import pack_graphs
from streamguard_ml.graphs import build_graph
from streamguard_ml.ingest import ingest, read_samples
from streamguard_ml.store import LocalStore

store = LocalStore(tempfile.mkdtemp())
ingest(store, "s", ["sven:../shared/datasets/sven-train", "synthetic:2000@7"])
codes = [s.code for s in read_samples(store, layout.ingested("s"))[0]]
fast, _ = fastgraph.graph_arrays(codes)
ref = pack_graphs([build_graph(c) for c in codes])
bad = [k for k in ref if not np.array_equal(ref[k], fast[k])]
print(f"sanitized parity over {len(codes)} functions: {'OK' if not bad else 'MISMATCH ' + str(bad)}")
raise SystemExit(1 if bad else 0)
EOF
fi
