/*
 * streamguard_ml._fastgraph: the program-graph builder of streamguard_ml/graphs.py in C.
 *
 * graphs.py is the specification: this file builds, for every function, exactly the
 * graph `_Builder` builds (nodes, sub-token buckets, marks, AST/CFG/DFG/call edges,
 * taint marks), packed the way `dataset.pack_graphs` packs it.  Every name-dependent
 * set (skipped types, leaves, operators, value carriers, the vocabulary, the taint
 * rules) comes from graphs.py through `configure`, so nothing is written twice.
 *
 * Why: in Python, every tree-sitter node touched is a Python object; building the
 * graphs of 5,000 functions took 2.7 CPU-seconds, fourteen times the parse itself.  Here
 * the whole batch runs with the GIL released, so threads build graphs in parallel.
 *
 * A function this builder does not handle byte-for-byte like graphs.py (any non-ASCII
 * byte: Python's regex and lower() are Unicode-aware; nesting deeper than MAX_DEPTH:
 * Python may raise RecursionError there) is reported back for graphs.py to build.
 * tests/test_fastgraph.py compares both builders graph by graph.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tree_sitter/api.h"

#define MAX_DEPTH 100
#define MAX_TOK 16

/* ------------------------------------------------------------------------------------------ */
/* configuration (set once by configure(); read-only while building)                           */

enum {
    F_SKIPPED = 1 << 0, F_LEAF = 1 << 1, F_OPERATOR = 1 << 2, F_CARRIER = 1 << 3,
};

enum Kind {
    K_OTHER, K_IDENTIFIER, K_ATTRIBUTE, K_SUBSCRIPT, K_CALL, K_PARAMETERS, K_KEYWORD_ARGUMENT, K_COMMENT,
    K_STRING, K_STRING_START, K_STRING_CONTENT, K_INTERPOLATION, K_BINARY_OPERATOR, K_CONCATENATED_STRING,
    K_BLOCK, K_MODULE, K_DECORATED_DEFINITION, K_FUNCTION_DEFINITION, K_CLASS_DEFINITION, K_IF_STATEMENT,
    K_ELSE_CLAUSE, K_FOR_STATEMENT, K_WHILE_STATEMENT, K_TRY_STATEMENT, K_EXCEPT_CLAUSE, K_FINALLY_CLAUSE,
    K_WITH_STATEMENT, K_WITH_CLAUSE, K_AS_PATTERN, K_JUMP, K_EXPRESSION_STATEMENT, K_ASSIGNMENT,
    K_AUGMENTED_ASSIGNMENT, K_LAMBDA, K_TARGET_GROUP,
};

static const struct { const char *name; int kind; } KIND_NAMES[] = {
    {"identifier", K_IDENTIFIER}, {"attribute", K_ATTRIBUTE}, {"subscript", K_SUBSCRIPT}, {"call", K_CALL},
    {"parameters", K_PARAMETERS}, {"keyword_argument", K_KEYWORD_ARGUMENT}, {"comment", K_COMMENT},
    {"string", K_STRING}, {"string_start", K_STRING_START}, {"string_content", K_STRING_CONTENT},
    {"interpolation", K_INTERPOLATION}, {"binary_operator", K_BINARY_OPERATOR},
    {"concatenated_string", K_CONCATENATED_STRING}, {"block", K_BLOCK}, {"module", K_MODULE},
    {"decorated_definition", K_DECORATED_DEFINITION}, {"function_definition", K_FUNCTION_DEFINITION},
    {"class_definition", K_CLASS_DEFINITION}, {"if_statement", K_IF_STATEMENT}, {"else_clause", K_ELSE_CLAUSE},
    {"for_statement", K_FOR_STATEMENT}, {"while_statement", K_WHILE_STATEMENT},
    {"try_statement", K_TRY_STATEMENT}, {"except_clause", K_EXCEPT_CLAUSE}, {"finally_clause", K_FINALLY_CLAUSE},
    {"with_statement", K_WITH_STATEMENT}, {"with_clause", K_WITH_CLAUSE}, {"as_pattern", K_AS_PATTERN},
    {"return_statement", K_JUMP}, {"raise_statement", K_JUMP}, {"break_statement", K_JUMP},
    {"continue_statement", K_JUMP}, {"expression_statement", K_EXPRESSION_STATEMENT},
    {"assignment", K_ASSIGNMENT}, {"augmented_assignment", K_AUGMENTED_ASSIGNMENT}, {"lambda", K_LAMBDA},
    {"pattern_list", K_TARGET_GROUP}, {"tuple_pattern", K_TARGET_GROUP}, {"list_pattern", K_TARGET_GROUP},
    {"tuple", K_TARGET_GROUP}, {"list", K_TARGET_GROUP}, {"as_pattern_target", K_TARGET_GROUP},
    {"list_splat_pattern", K_TARGET_GROUP}, {"parenthesized_expression", K_TARGET_GROUP},
};

enum Field {
    FD_FUNCTION, FD_ARGUMENTS, FD_VALUE, FD_OBJECT, FD_ATTRIBUTE, FD_NAME, FD_BODY, FD_CONSEQUENCE,
    FD_ALTERNATIVE, FD_DEFINITION, FD_CONDITION, FD_PARAMETERS, FD_LEFT, FD_RIGHT, FD_ALIAS, FD_ARGUMENT, FD_COUNT
};
static const char *FIELD_NAMES[FD_COUNT] = {
    "function", "arguments", "value", "object", "attribute", "name", "body", "consequence", "alternative",
    "definition", "condition", "parameters", "left", "right", "alias", "argument",
};

typedef struct {
    int mark;
    char *call;           /* NULL: the rule names no call */
    int builtin;
    char **words; int n_words;
    char *keyword;        /* NULL: no keyword condition */
    int min_args, max_args;  /* max_args < 0: no upper bound */
    int *args; int n_args; int has_args;
    int injection;
    char **if_text; int n_if; int has_if;   /* rule applies only if the compact argument text holds one */
    char **unless_text; int n_unless;       /* ... and none of these */
    int unconditional;                      /* sink: tainted whatever flows in */
    int safe;                               /* sanitizer: a call it names is no sink */
} Rule;

typedef struct {
    const TSLanguage *language;
    uint32_t n_symbols;
    uint8_t *flags;       /* per symbol */
    uint8_t *kind;        /* per symbol */
    int16_t *vocab;       /* per symbol: node-type id (0 = unknown) */
    int16_t *name_bucket; /* per symbol: bucket of the type name itself (leaf and operator tokens) */
    TSFieldId field[FD_COUNT];
    Rule *rules; int n_rules;
    char **source_attributes; int n_source_attributes;
    int parameter_sources;
    int bit_source, bit_sink, bit_sanitizer, bit_tainted, bit_tainted_sink;
    int edge_ast, edge_cfg, edge_dfg, edge_call;
    int subtokens, buckets;
    int ready;
} Config;

static Config C;

/* ------------------------------------------------------------------------------------------ */
/* small utilities                                                                              */

static uint32_t CRC_TABLE[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        CRC_TABLE[i] = c;
    }
}

/* A bump allocator per graph: defs, sets and name strings die with the graph. */
typedef struct Chunk { struct Chunk *next; size_t used, cap; char data[]; } Chunk;
typedef struct { Chunk *head; } Arena;

static void *arena_alloc(Arena *a, size_t n) {
    n = (n + 7) & ~(size_t)7;
    if (a->head == NULL || a->head->used + n > a->head->cap) {
        size_t cap = n > 65536 ? n : 65536;
        Chunk *c = malloc(sizeof(Chunk) + cap);
        if (c == NULL) return NULL;  /* callers report out of memory */
        c->next = a->head; c->used = 0; c->cap = cap;
        a->head = c;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

static void arena_reset(Arena *a) {  /* keep the newest chunk, free the rest */
    if (a->head == NULL) return;
    Chunk *c = a->head->next;
    while (c) { Chunk *n = c->next; free(c); c = n; }
    a->head->next = NULL; a->head->used = 0;
}

static void arena_free(Arena *a) {
    Chunk *c = a->head;
    while (c) { Chunk *n = c->next; free(c); c = n; }
    a->head = NULL;
}

#define VEC(T) struct { T *v; size_t n, cap; }
#define VPUSH(vec, x, failflag) do { \
    if ((vec).n == (vec).cap) { \
        size_t nc_ = (vec).cap ? (vec).cap * 2 : 64; \
        void *nv_ = realloc((vec).v, nc_ * sizeof(*(vec).v)); \
        if (nv_ == NULL) { failflag = 1; break; } \
        (vec).v = nv_; (vec).cap = nc_; \
    } \
    (vec).v[(vec).n++] = (x); \
} while (0)

typedef struct { int32_t s, d, t; } Edge;
typedef struct { int32_t n; const int32_t *v; } Set;                 /* sorted, immutable */
typedef struct { int32_t n, cap; int32_t *names; Set *sets; } Defs;  /* name id → set */
typedef struct { int32_t node; int32_t injection; int32_t unconditional; int32_t n; int32_t *points; } SinkArgs;

/* ------------------------------------------------------------------------------------------ */
/* the per-graph builder                                                                        */

typedef struct {
    const char *src;
    Arena arena;
    int fail;  /* 1: hand to graphs.py; 2: out of memory */
    int depth;
    TSTreeCursor cursor; int has_cursor;
    VEC(TSNode) nodes;
    VEC(TSNode *) kids;       /* named children of every collected node (read-only, arena) */
    VEC(uint32_t) n_kids;
    VEC(int32_t) parent;      /* index of every collected node's parent (-1: the root) */
    int indexed;              /* nodes are in the id map: children() may answer from kids */
    VEC(uint16_t) sym;
    VEC(uint8_t) marks;
    VEC(Edge) edges;
    VEC(SinkArgs) sinks;
    /* node id → index */
    const void **keys; int32_t *vals; size_t map_cap;
    /* interned names: open addressing over (offset, length) into names_buf */
    char *names_buf; size_t names_len, names_cap;
    uint32_t *name_off, *name_len; int32_t *name_slot; size_t name_cap, n_names;
    /* scratch for dotted names */
    char *scratch; size_t scratch_cap;
    /* merge(): name id → its slot in the merged Defs, -1 between calls */
    int32_t *merge_pos; size_t merge_cap;
} B;

static void fail(B *b, int why) { if (b->fail == 0 || why == 2) b->fail = why; }

/* Index into the per-symbol tables: the grammar's symbols, then one slot for ERROR
 * (ts_builtin_sym_error is 0xFFFF, outside the grammar's symbol range). */
static uint32_t slot(TSNode n) {
    TSSymbol s = ts_node_symbol(n);
    return s < C.n_symbols ? s : C.n_symbols;
}
static int sym_kind(TSNode n) { return C.kind[slot(n)]; }
static int sym_flags(TSNode n) { return C.flags[slot(n)]; }
static TSNode field(TSNode n, int f) { return ts_node_child_by_field_id(n, C.field[f]); }
static int present(TSNode n) { return !ts_node_is_null(n); }
static const char *text(B *b, TSNode n, uint32_t *len) {
    uint32_t s = ts_node_start_byte(n), e = ts_node_end_byte(n);
    *len = e - s;
    return b->src + s;
}
static int text_is(B *b, TSNode n, const char *s) {
    uint32_t len; const char *t = text(b, n, &len);
    return len == strlen(s) && memcmp(t, s, len) == 0;
}

static void cursor_at(B *b, TSNode n) {
    if (!b->has_cursor) { b->cursor = ts_tree_cursor_new(n); b->has_cursor = 1; }
    else ts_tree_cursor_reset(&b->cursor, n);
}

static int32_t idx(B *b, TSNode n);

/* n's children, in order, into an arena array: named ones only, or those under `field` (0: any) */
static TSNode *cursor_children(B *b, TSNode n, uint32_t total, int named_only, TSFieldId field, uint32_t *count) {
    *count = 0;
    if (total == 0) return NULL;
    TSNode *out = arena_alloc(&b->arena, total * sizeof(TSNode));
    if (out == NULL) { fail(b, 2); return NULL; }
    cursor_at(b, n);
    if (ts_tree_cursor_goto_first_child(&b->cursor)) {
        do {
            if (field && ts_tree_cursor_current_field_id(&b->cursor) != field) continue;
            TSNode c = ts_tree_cursor_current_node(&b->cursor);
            if ((!named_only || ts_node_is_named(c)) && *count < total) out[(*count)++] = c;
        } while (ts_tree_cursor_goto_next_sibling(&b->cursor));
    }
    return out;
}

/* children (named_only) of n, in order; the array must not be modified (it may be shared) */
static TSNode *children(B *b, TSNode n, int named_only, uint32_t *count) {
    if (named_only && b->indexed) {
        int32_t i = idx(b, n);
        if (i >= 0) { *count = b->n_kids.v[i]; return b->kids.v[i]; }
    }
    uint32_t total = named_only ? ts_node_named_child_count(n) : ts_node_child_count(n);
    return cursor_children(b, n, total, named_only, 0, count);
}

/* children of n whose field is f (children_by_field_name) */
static TSNode *field_children(B *b, TSNode n, int f, uint32_t *count) {
    return cursor_children(b, n, ts_node_child_count(n), 0, C.field[f], count);
}

static size_t hash_ptr(const void *p) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33;
    return (size_t)x;
}

static int32_t idx(B *b, TSNode n) {
    if (ts_node_is_null(n) || b->map_cap == 0) return -1;
    size_t mask = b->map_cap - 1, h = hash_ptr(n.id) & mask;
    while (b->keys[h]) {
        if (b->keys[h] == n.id) return b->vals[h];
        h = (h + 1) & mask;
    }
    return -1;
}

static void build_index(B *b) {
    size_t cap = 64;
    while (cap < b->nodes.n * 2 + 1) cap *= 2;
    if (cap > b->map_cap) {
        free(b->keys); free(b->vals);
        b->keys = malloc(cap * sizeof(void *)); b->vals = malloc(cap * sizeof(int32_t));
        if (!b->keys || !b->vals) { b->map_cap = 0; fail(b, 2); return; }
        b->map_cap = cap;
    }
    memset(b->keys, 0, b->map_cap * sizeof(void *));
    size_t mask = b->map_cap - 1;
    for (size_t i = 0; i < b->nodes.n; i++) {
        const void *k = b->nodes.v[i].id;
        size_t h = hash_ptr(k) & mask;
        while (b->keys[h] && b->keys[h] != k) h = (h + 1) & mask;
        b->keys[h] = k; b->vals[h] = (int32_t)i;
    }
}

static void add_edge(B *b, int32_t s, int32_t d, int t) {
    Edge e = {s, d, t};
    int oom = 0;
    VPUSH(b->edges, e, oom);
    if (oom) fail(b, 2);
}

static void edge(B *b, TSNode src, TSNode dst, int t) {
    int32_t a = idx(b, src), c = idx(b, dst);
    if (a >= 0 && c >= 0 && a != c) add_edge(b, a, c, t);
}

/* -- sub-tokens: [A-Z]?[a-z]+ | [A-Z]+(?![a-z]) | \d+ | [^\sA-Za-z\d]+ on ASCII ------------------- */
static int is_lower(int c) { return c >= 'a' && c <= 'z'; }
static int is_upper(int c) { return c >= 'A' && c <= 'Z'; }
static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_space(int c) { return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f); }
static int is_other(int c) { return !is_space(c) && !is_lower(c) && !is_upper(c) && !is_digit(c); }

/* The next match of the sub-token regex in s[*i:n] as [*start, *end); 0 when there is none. */
static int next_subtoken(const char *s, size_t n, size_t *i, size_t *start, size_t *end) {
    while (*i < n) {
        int c = (uint8_t)s[*i];
        size_t e = *i;
        if (is_lower(c) || (is_upper(c) && e + 1 < n && is_lower((uint8_t)s[e + 1]))) {
            e++;
            while (e < n && is_lower((uint8_t)s[e])) e++;
        } else if (is_upper(c)) {
            while (e < n && is_upper((uint8_t)s[e])) e++;
            if (e < n && is_lower((uint8_t)s[e])) e--;  /* (?![a-z]) backtracks one letter */
        } else if (is_digit(c)) {
            while (e < n && is_digit((uint8_t)s[e])) e++;
        } else if (is_other(c)) {
            while (e < n && is_other((uint8_t)s[e])) e++;
        } else {
            (*i)++;
            continue;
        }
        *start = *i; *end = e; *i = e;
        return 1;
    }
    return 0;
}

static int lower(int c) { return is_upper(c) ? c + 32 : c; }

/* graphs.stable_bucket: CRC-32 of the (optionally ASCII-lower-cased) bytes into 1..buckets-1 */
static int16_t bucket_of(const char *s, size_t n, int lowercase) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        uint8_t byte = lowercase ? (uint8_t)lower((uint8_t)s[i]) : (uint8_t)s[i];
        c = CRC_TABLE[(c ^ byte) & 0xFF] ^ (c >> 8);
    }
    c ^= 0xFFFFFFFFu;
    return (int16_t)(c % (uint32_t)(C.buckets - 1) + 1);
}

/* Appends up to `room` sub-token buckets of s to out (graphs.subtokens + stable_bucket); returns how many. */
static int subtoken_buckets(const char *s, size_t n, int16_t *out, int room) {
    int got = 0;
    size_t i = 0, start, end;
    while (got < room && next_subtoken(s, n, &i, &start, &end)) out[got++] = bucket_of(s + start, end - start, 1);
    return got;
}

/* Lower-cased sub-token words of s (for name_words rules); returns how many. */
static int subtoken_words(const char *s, size_t n, char words[][64], int room) {
    int got = 0;
    size_t i = 0, start, end;
    while (got < room && next_subtoken(s, n, &i, &start, &end)) {
        size_t len = end - start;
        if (len >= 64) { words[got][0] = '\x01'; len = 1; }  /* longer than any rule word: matches none */
        else for (size_t k = 0; k < len; k++) words[got][k] = (char)lower((uint8_t)s[start + k]);
        words[got++][len] = '\0';
    }
    return got;
}

/* -- nodes ------------------------------------------------------------------------------------- */
typedef struct {
    VEC(int16_t) type;
    VEC(int16_t) tokens;
    VEC(uint8_t) marks;
    VEC(int32_t) line, end_line;
    VEC(int32_t) edges;
    VEC(int64_t) node_count, edge_count;
} Out;

static void node_tokens(B *b, TSNode n, int16_t *tok) {
    int k = sym_kind(n), f = sym_flags(n), got = 0;
    int room = C.subtokens;
    uint32_t len;
    if (f & F_LEAF) {
        if (k == K_IDENTIFIER) {
            const char *t = text(b, n, &len);
            got = subtoken_buckets(t, len, tok, room);
        } else {
            tok[0] = C.name_bucket[slot(n)];
            got = 1;
        }
    } else if (k == K_STRING) {
        uint32_t nc; TSNode *cs = children(b, n, 0, &nc);
        for (uint32_t i = 0; i < nc && got < room; i++) {
            int ck = sym_kind(cs[i]);
            if (ck == K_STRING_START || ck == K_STRING_CONTENT) {
                const char *t = text(b, cs[i], &len);
                got += subtoken_buckets(t, len, tok + got, room - got);
            }
        }
    } else if (f & F_OPERATOR) {
        uint32_t nc; TSNode *cs = children(b, n, 0, &nc);
        for (uint32_t i = 0; i < nc && got < room; i++)
            if (!ts_node_is_named(cs[i])) tok[got++] = C.name_bucket[slot(cs[i])];
    }
    for (; got < room; got++) tok[got] = 0;
}

/* Pre-order over named nodes, skipping skipped types with their subtrees (graphs._Builder.collect). */
static void collect(B *b, TSNode root) {
    VEC(struct { TSNode n; int32_t parent; }) stack = {0};
    int oom = 0;
    typeof(*stack.v) first = {root, -1};
    VPUSH(stack, first, oom);
    while (stack.n && !oom) {
        typeof(*stack.v) top = stack.v[--stack.n];
        if (sym_flags(top.n) & F_SKIPPED) continue;
        int32_t i = (int32_t)b->nodes.n;
        VPUSH(b->nodes, top.n, oom);
        VPUSH(b->sym, (uint16_t)slot(top.n), oom);
        VPUSH(b->marks, 0, oom);
        if (top.parent >= 0) add_edge(b, top.parent, i, C.edge_ast);
        uint32_t nc; TSNode *cs = children(b, top.n, 1, &nc);
        VPUSH(b->kids, cs, oom);
        VPUSH(b->parent, top.parent, oom);
        VPUSH(b->n_kids, nc, oom);
        for (uint32_t k = nc; k-- > 0;) {
            typeof(*stack.v) item = {cs[k], i};
            VPUSH(stack, item, oom);
        }
    }
    free(stack.v);
    if (oom) fail(b, 2);
}

/* -- names --------------------------------------------------------------------------------------- */
/* dotted(node) into b->scratch; returns length, or -1 for None */
static int scratch_room(B *b, size_t need) {
    if (need <= b->scratch_cap) return 1;
    size_t cap = b->scratch_cap ? b->scratch_cap : 256;
    while (cap < need) cap *= 2;
    char *p = realloc(b->scratch, cap);
    if (!p) { fail(b, 2); return 0; }
    b->scratch = p; b->scratch_cap = cap;
    return 1;
}

static long dotted_into(B *b, TSNode n, size_t at, int depth) {
    if (depth > MAX_DEPTH) { fail(b, 1); return -1; }
    int k = sym_kind(n);
    uint32_t len;
    if (k == K_IDENTIFIER) {
        const char *t = text(b, n, &len);
        if (!scratch_room(b, at + len + 1)) return -1;
        memcpy(b->scratch + at, t, len);
        return (long)len;
    }
    if (k == K_ATTRIBUTE) {
        TSNode obj = field(n, FD_OBJECT), attr = field(n, FD_ATTRIBUTE);
        long base = present(obj) ? dotted_into(b, obj, at, depth + 1) : -1;
        if (base > 0 && present(attr)) {
            const char *t = text(b, attr, &len);
            if (!scratch_room(b, at + base + 1 + len + 1)) return -1;
            b->scratch[at + base] = '.';
            memcpy(b->scratch + at + base + 1, t, len);
            return base + 1 + (long)len;
        }
    }
    return -1;
}

static long dotted(B *b, TSNode n) { return dotted_into(b, n, 0, 0); }

static size_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
    return (size_t)h;
}

/* The id of name s[0:n] in this graph, interning it. */
static int32_t intern(B *b, const char *s, size_t n) {
    if (b->n_names * 2 + 2 > b->name_cap) {  /* grow and rehash */
        size_t cap = b->name_cap ? b->name_cap * 2 : 256;
        int32_t *slot = malloc(cap * sizeof(int32_t));
        uint32_t *off = realloc(b->name_off, cap * sizeof(uint32_t));
        if (off) b->name_off = off;
        uint32_t *len = realloc(b->name_len, cap * sizeof(uint32_t));
        if (len) b->name_len = len;
        if (!slot || !off || !len) { free(slot); fail(b, 2); return -1; }
        for (size_t i = 0; i < cap; i++) slot[i] = -1;
        for (size_t id = 0; id < b->n_names; id++) {
            size_t h = hash_bytes(b->names_buf + b->name_off[id], b->name_len[id]) & (cap - 1);
            while (slot[h] >= 0) h = (h + 1) & (cap - 1);
            slot[h] = (int32_t)id;
        }
        free(b->name_slot);
        b->name_slot = slot; b->name_cap = cap;
    }
    size_t mask = b->name_cap - 1, h = hash_bytes(s, n) & mask;
    while (b->name_slot[h] >= 0) {
        int32_t id = b->name_slot[h];
        if (b->name_len[id] == n && memcmp(b->names_buf + b->name_off[id], s, n) == 0) return id;
        h = (h + 1) & mask;
    }
    if (b->names_len + n > b->names_cap) {
        size_t cap = b->names_cap ? b->names_cap : 4096;
        while (cap < b->names_len + n) cap *= 2;
        char *p = realloc(b->names_buf, cap);
        if (!p) { fail(b, 2); return -1; }
        b->names_buf = p; b->names_cap = cap;
    }
    memcpy(b->names_buf + b->names_len, s, n);
    int32_t id = (int32_t)b->n_names++;
    b->name_off[id] = (uint32_t)b->names_len; b->name_len[id] = (uint32_t)n;
    b->names_len += n;
    b->name_slot[h] = id;
    return id;
}

static int32_t dotted_name(B *b, TSNode n) {
    long len = dotted(b, n);
    return len < 0 ? -1 : intern(b, b->scratch, (size_t)len);
}

static int32_t text_name(B *b, TSNode n) {
    uint32_t len; const char *t = text(b, n, &len);
    return intern(b, t, len);
}

/* -- taint rules ----------------------------------------------------------------------------------- */
static int ends_with(const char *s, size_t n, const char *suffix, size_t m) {
    return m <= n && memcmp(s + n - m, suffix, m) == 0;
}

/* graphs._call_matches / _named_by */
static int named_by(const Rule *r, const char *callee, size_t n) {
    const char *p = r->call;
    size_t m = strlen(p);
    if (r->builtin)
        return (n == m && memcmp(callee, p, m) == 0) ||
               (n == m + 9 && memcmp(callee, "builtins.", 9) == 0 && memcmp(callee + 9, p, m) == 0);
    if (p[0] == '.') {
        const char *dot = NULL;
        for (size_t i = 0; i < n; i++) if (callee[i] == '.') dot = callee + i;
        if (dot == NULL) return 0;
        size_t tail = n - (size_t)(dot + 1 - callee);
        return tail == m - 1 && memcmp(dot + 1, p + 1, m - 1) == 0;
    }
    if (m >= 2 && p[m - 2] == '.' && p[m - 1] == '*') {
        size_t k = m - 1;  /* pattern[:-1], ending in '.' */
        if (n >= k && memcmp(callee, p, k) == 0) return 1;
        /* f".{pattern[:-1]}" in f".{callee}" */
        for (size_t i = 0; i + k <= n; i++)
            if ((i == 0 || callee[i - 1] == '.') && memcmp(callee + i, p, k) == 0) return 1;
        return 0;
    }
    if (n == m && memcmp(callee, p, m) == 0) return 1;
    return n > m && callee[n - m - 1] == '.' && memcmp(callee + n - m, p, m) == 0;
}

/* graphs._call_rules: indices of matching rules into out; returns count */
static int call_rules(const char *callee, size_t n, int *out) {
    int got = 0;
    for (int i = 0; i < C.n_rules; i++)
        if (C.rules[i].call && named_by(&C.rules[i], callee, n)) out[got++] = i;
    if (got) return got;
    const char *last = callee;
    for (size_t i = 0; i < n; i++) if (callee[i] == '.') last = callee + i + 1;
    char words[MAX_TOK][64];
    int nw = subtoken_words(last, n - (size_t)(last - callee), words, C.subtokens);
    for (int i = 0; i < C.n_rules; i++) {
        const Rule *r = &C.rules[i];
        int hit = 0;
        for (int w = 0; w < r->n_words && !hit; w++)
            for (int k = 0; k < nw && !hit; k++) hit = strcmp(r->words[w], words[k]) == 0;
        if (hit) out[got++] = i;
    }
    return got;
}

static int is_source_attribute(const char *name, size_t n) {
    for (int i = 0; i < C.n_source_attributes; i++) {
        const char *a = C.source_attributes[i];
        size_t m = strlen(a);
        if ((n == m && memcmp(name, a, m) == 0) || (n > m && name[n - m - 1] == '.' && ends_with(name, n, a, m)))
            return 1;
    }
    return 0;
}

static void mark_call(B *b, int32_t i, TSNode node) {
    TSNode fn = field(node, FD_FUNCTION), args = field(node, FD_ARGUMENTS);
    long callee_len = -1;
    if (present(fn)) {
        callee_len = dotted(b, fn);
        if (callee_len < 0 && sym_kind(fn) == K_ATTRIBUTE) {
            TSNode attr = field(fn, FD_ATTRIBUTE);
            if (present(attr)) {
                uint32_t len; const char *t = text(b, attr, &len);
                if (!scratch_room(b, 7 + len + 1)) return;
                memcpy(b->scratch, "<expr>.", 7);
                memcpy(b->scratch + 7, t, len);
                callee_len = 7 + (long)len;
            }
        }
    }
    uint32_t na = 0;
    TSNode *all = present(args) ? children(b, args, 1, &na) : NULL;
    TSNode *arg = arena_alloc(&b->arena, (na + 1) * sizeof(TSNode));
    TSNode *val = arena_alloc(&b->arena, (na + 1) * sizeof(TSNode));
    TSNode *pos = arena_alloc(&b->arena, (na + 1) * sizeof(TSNode));
    if (!arg || !val || !pos) { fail(b, 2); return; }
    uint32_t n = 0, np = 0;
    for (uint32_t k = 0; k < na; k++) {
        if (sym_kind(all[k]) == K_COMMENT) continue;
        arg[n] = all[k];
        val[n] = all[k];
        if (sym_kind(all[k]) == K_KEYWORD_ARGUMENT) {
            TSNode v = field(all[k], FD_VALUE);
            if (present(v)) val[n] = v;
        } else {
            pos[np++] = val[n];
        }
        n++;
    }
    for (uint32_t k = 0; k < n; k++) edge(b, val[k], node, C.edge_call);
    if (callee_len <= 0) return;  /* None or "": no rules */
    char callee[1024];
    if (callee_len >= (long)sizeof callee) { fail(b, 1); return; }
    memcpy(callee, b->scratch, (size_t)callee_len);
    int matching[256];
    if (C.n_rules > 256) { fail(b, 1); return; }
    int nm = call_rules(callee, (size_t)callee_len, matching);
    /* graphs._compact: the argument text without whitespace, built only when a rule reads it */
    char *compact = NULL;
    size_t compact_len = 0;
    for (int m = 0; m < nm && !compact; m++) {
        const Rule *r = &C.rules[matching[m]];
        if (!r->has_if && !r->n_unless) continue;
        uint32_t len = 0;
        const char *t = present(args) ? text(b, args, &len) : "";
        compact = arena_alloc(&b->arena, (size_t)len + 1);
        if (!compact) { fail(b, 2); return; }
        for (uint32_t q = 0; q < len; q++) if (!is_space((unsigned char)t[q])) compact[compact_len++] = t[q];
        compact[compact_len] = 0;
    }
    int applies[256], safe = 0;
    for (int m = 0; m < nm; m++) {  /* graphs._applies */
        const Rule *r = &C.rules[matching[m]];
        applies[m] = 0;
        if (r->keyword) {  /* rule["keyword"] in {kwarg text without spaces} */
            int found = 0;
            size_t kl = strlen(r->keyword);
            for (uint32_t k = 0; k < n && !found; k++) {
                if (sym_kind(arg[k]) != K_KEYWORD_ARGUMENT) continue;
                uint32_t len; const char *t = text(b, arg[k], &len);
                size_t j = 0, q = 0;
                int ok = 1;
                for (; q < len && ok; q++) {
                    if (t[q] == ' ') continue;
                    ok = j < kl && t[q] == r->keyword[j];
                    j++;
                }
                found = ok && j == kl;
            }
            if (!found) continue;
        }
        if ((int)np < r->min_args || (r->max_args >= 0 && (int)np > r->max_args)) continue;
        if (r->has_if) {
            int hit = 0;
            for (int w = 0; w < r->n_if && !hit; w++) hit = compact && strstr(compact, r->if_text[w]) != NULL;
            if (!hit) continue;
        }
        int veto = 0;
        for (int w = 0; w < r->n_unless && !veto; w++) veto = compact && strstr(compact, r->unless_text[w]) != NULL;
        if (veto) continue;
        applies[m] = 1;
        safe |= r->safe;
    }
    for (int m = 0; m < nm; m++) {
        const Rule *r = &C.rules[matching[m]];
        if (!applies[m] || (safe && r->mark == C.bit_sink)) continue;
        b->marks.v[i] |= (uint8_t)r->mark;
        if (r->mark == C.bit_sink) {
            SinkArgs s = {i, r->injection, r->unconditional, 0, NULL};
            s.points = arena_alloc(&b->arena, (n + (uint32_t)r->n_args + 1) * sizeof(int32_t));
            if (!s.points) { fail(b, 2); return; }
            if (r->has_args) {
                for (int a = 0; a < r->n_args; a++)
                    if (r->args[a] >= 0 && (uint32_t)r->args[a] < np) {
                        int32_t j = idx(b, pos[r->args[a]]);
                        if (j >= 0) s.points[s.n++] = j;
                    }
            } else {
                for (uint32_t k = 0; k < n; k++) {
                    int32_t j = idx(b, val[k]);
                    if (j >= 0) s.points[s.n++] = j;
                }
            }
            int oom = 0;
            VPUSH(b->sinks, s, oom);
            if (oom) fail(b, 2);
        }
    }
}

static void mark_and_link_calls(B *b) {
    for (size_t i = 0; i < b->nodes.n && !b->fail; i++) {
        TSNode node = b->nodes.v[i];
        int k = C.kind[b->sym.v[i]];
        if (k == K_CALL) {
            mark_call(b, (int32_t)i, node);
        } else if (k == K_ATTRIBUTE) {
            long len = dotted(b, node);
            if (len > 0 && is_source_attribute(b->scratch, (size_t)len)) b->marks.v[i] |= (uint8_t)C.bit_source;
        } else if (k == K_PARAMETERS && C.parameter_sources) {
            uint32_t np; TSNode *ps = children(b, node, 1, &np);
            for (uint32_t q = 0; q < np; q++) {
                TSNode p = ps[q], ident = p;
                if (sym_kind(p) != K_IDENTIFIER) {
                    ident = field(p, FD_NAME);
                    if (!present(ident)) ident = ts_node_named_child_count(p) ? ts_node_named_child(p, 0) : (TSNode){0};
                }
                if (!present(ident) || text_is(b, ident, "self") || text_is(b, ident, "cls")) continue;
                int32_t j = idx(b, ident);
                if (j >= 0) b->marks.v[j] |= (uint8_t)C.bit_source;
            }
        }
    }
}

/* -- control flow (graphs._Builder.cfg_block / cfg_stmt) ------------------------------------------ */
typedef struct { uint32_t n; TSNode *v; } Nodes;

static Nodes one(B *b, TSNode n) {
    Nodes r = {1, arena_alloc(&b->arena, sizeof(TSNode))};
    if (!r.v) { fail(b, 2); r.n = 0; } else r.v[0] = n;
    return r;
}

static Nodes concat(B *b, Nodes x, Nodes y) {
    Nodes r = {x.n + y.n, arena_alloc(&b->arena, (x.n + y.n + 1) * sizeof(TSNode))};
    if (!r.v) { fail(b, 2); r.n = 0; return r; }
    if (x.n) memcpy(r.v, x.v, x.n * sizeof(TSNode));
    if (y.n) memcpy(r.v + x.n, y.v, y.n * sizeof(TSNode));
    return r;
}

static TSNode *statements(B *b, TSNode block, uint32_t *count) {
    uint32_t n; TSNode *cs = children(b, block, 1, &n);
    *count = 0;
    TSNode *out = arena_alloc(&b->arena, (n + 1) * sizeof(TSNode));
    if (!out) { fail(b, 2); return NULL; }
    for (uint32_t i = 0; i < n; i++) if (sym_kind(cs[i]) != K_COMMENT) out[(*count)++] = cs[i];
    return out;
}

/* graphs._Builder: a block's statements, or a single statement standing for one */
static TSNode *stmts_of(B *b, TSNode block, uint32_t *count) {
    int k = sym_kind(block);
    if (k == K_BLOCK || k == K_MODULE) return statements(b, block, count);
    TSNode *one_stmt = arena_alloc(&b->arena, sizeof(TSNode));
    if (!one_stmt) { fail(b, 2); *count = 0; return NULL; }
    one_stmt[0] = block;
    *count = 1;
    return one_stmt;
}

static TSNode first_block(B *b, TSNode clause) {
    uint32_t n; TSNode *cs = children(b, clause, 1, &n);
    for (uint32_t i = 0; i < n; i++) if (sym_kind(cs[i]) == K_BLOCK) return cs[i];
    return (TSNode){0};
}

static Nodes cfg_stmt(B *b, TSNode stmt);

static Nodes cfg_block(B *b, TSNode block, Nodes preds) {
    if (!present(block) || b->fail) return preds;
    if (++b->depth > MAX_DEPTH) { fail(b, 1); return preds; }
    uint32_t n;
    TSNode *stmts = stmts_of(b, block, &n);
    for (uint32_t s = 0; s < n && !b->fail; s++) {
        for (uint32_t p = 0; p < preds.n; p++) edge(b, preds.v[p], stmts[s], C.edge_cfg);
        preds = cfg_stmt(b, stmts[s]);
    }
    b->depth--;
    return preds;
}

static Nodes cfg_stmt(B *b, TSNode stmt) {
    int t = sym_kind(stmt);
    Nodes none = {0, NULL};
    if (t == K_DECORATED_DEFINITION) {
        TSNode d = field(stmt, FD_DEFINITION);
        if (present(d)) stmt = d;
        t = sym_kind(stmt);
    }
    if (t == K_FUNCTION_DEFINITION || t == K_CLASS_DEFINITION) {
        cfg_block(b, field(stmt, FD_BODY), one(b, stmt));
        return one(b, stmt);
    }
    if (t == K_IF_STATEMENT) {
        Nodes exits = cfg_block(b, field(stmt, FD_CONSEQUENCE), one(b, stmt));
        int has_else = 0;
        uint32_t na; TSNode *alts = field_children(b, stmt, FD_ALTERNATIVE, &na);
        for (uint32_t a = 0; a < na; a++) {
            TSNode body = field(alts[a], FD_CONSEQUENCE);
            if (!present(body)) body = field(alts[a], FD_BODY);
            exits = concat(b, exits, cfg_block(b, body, one(b, alts[a])));
            edge(b, stmt, alts[a], C.edge_cfg);
            has_else |= sym_kind(alts[a]) == K_ELSE_CLAUSE;
        }
        return has_else ? exits : concat(b, exits, one(b, stmt));
    }
    if (t == K_FOR_STATEMENT || t == K_WHILE_STATEMENT) {
        Nodes lasts = cfg_block(b, field(stmt, FD_BODY), one(b, stmt));
        for (uint32_t i = 0; i < lasts.n; i++) edge(b, lasts.v[i], stmt, C.edge_cfg);
        TSNode alt = field(stmt, FD_ALTERNATIVE);
        return present(alt) ? cfg_block(b, field(alt, FD_BODY), one(b, stmt)) : one(b, stmt);
    }
    if (t == K_TRY_STATEMENT) {
        Nodes exits = cfg_block(b, field(stmt, FD_BODY), one(b, stmt));
        uint32_t nc; TSNode *cs = children(b, stmt, 1, &nc);
        for (uint32_t i = 0; i < nc; i++) {
            int k = sym_kind(cs[i]);
            if (k == K_EXCEPT_CLAUSE || k == K_ELSE_CLAUSE || k == K_FINALLY_CLAUSE) {
                TSNode body = first_block(b, cs[i]);
                edge(b, stmt, cs[i], C.edge_cfg);
                exits = concat(b, exits, cfg_block(b, body, one(b, cs[i])));
            }
        }
        return exits;
    }
    if (t == K_WITH_STATEMENT) return cfg_block(b, field(stmt, FD_BODY), one(b, stmt));
    if (t == K_JUMP) return none;
    return one(b, stmt);
}

/* -- data flow (graphs._Builder.dfg_*) --------------------------------------------------------------- */
static Set set_of(B *b, int32_t j) {
    int32_t *v = arena_alloc(&b->arena, sizeof(int32_t));
    if (!v) { fail(b, 2); return (Set){0, NULL}; }
    v[0] = j;
    return (Set){1, v};
}

static Set set_union(B *b, Set x, Set y) {
    if (y.n == 0) return x;
    if (x.n == 0) return y;
    int32_t *v = arena_alloc(&b->arena, (size_t)(x.n + y.n) * sizeof(int32_t));
    if (!v) { fail(b, 2); return x; }
    int32_t i = 0, j = 0, n = 0;
    while (i < x.n || j < y.n) {
        int32_t a = i < x.n ? x.v[i] : INT32_MAX, c = j < y.n ? y.v[j] : INT32_MAX;
        int32_t m = a < c ? a : c;
        v[n++] = m;
        if (a == m) i++;
        if (c == m) j++;
    }
    return (Set){n, v};
}

static Defs *defs_new(B *b, int32_t cap) {
    Defs *d = arena_alloc(&b->arena, sizeof(Defs));
    if (!d) { fail(b, 2); return NULL; }
    d->n = 0; d->cap = cap;
    d->names = arena_alloc(&b->arena, (size_t)(cap + 1) * sizeof(int32_t));
    d->sets = arena_alloc(&b->arena, (size_t)(cap + 1) * sizeof(Set));
    if (!d->names || !d->sets) { fail(b, 2); return NULL; }
    return d;
}

static const Set *defs_get(const Defs *d, int32_t name) {
    if (d == NULL || name < 0) return NULL;
    for (int32_t i = 0; i < d->n; i++) if (d->names[i] == name) return &d->sets[i];
    return NULL;
}

static Defs *defs_clone(B *b, const Defs *d, int32_t extra) {
    Defs *c = defs_new(b, (d ? d->n : 0) + extra);
    if (!c) return NULL;
    if (d && d->n) {
        memcpy(c->names, d->names, (size_t)d->n * sizeof(int32_t));
        memcpy(c->sets, d->sets, (size_t)d->n * sizeof(Set));
        c->n = d->n;
    }
    return c;
}

/* d[name] = s, in place; d must have room (defs_clone with extra). */
static void defs_put(B *b, Defs *d, int32_t name, Set s) {
    for (int32_t i = 0; i < d->n; i++) if (d->names[i] == name) { d->sets[i] = s; return; }
    if (d->n >= d->cap) { fail(b, 1); return; }
    d->names[d->n] = name; d->sets[d->n] = s; d->n++;
}

/* graphs._merge: the union of the states' definitions, names in first-seen order.  A name's slot is
 * found through merge_pos (not by scanning out): a linear scan made every `if` cost O(names^2), so a
 * function of a few thousand `if` statements took seconds. */
static Defs *merge(B *b, Defs **states, int count) {
    int32_t total = 0;
    for (int i = 0; i < count; i++) if (states[i]) total += states[i]->n;
    Defs *out = defs_new(b, total);
    if (!out) return NULL;
    if (b->n_names > b->merge_cap) {
        size_t cap = b->n_names * 2;
        int32_t *pos = realloc(b->merge_pos, cap * sizeof(int32_t));
        if (!pos) { fail(b, 2); return NULL; }
        for (size_t k = b->merge_cap; k < cap; k++) pos[k] = -1;
        b->merge_pos = pos; b->merge_cap = cap;
    }
    for (int i = 0; i < count; i++) {
        const Defs *s = states[i];
        for (int32_t k = 0; s && k < s->n; k++) {
            int32_t name = s->names[k], j;
            if (name < 0) { fail(b, 2); continue; }  /* only a failed intern() gives -1 */
            j = b->merge_pos[name];
            if (j < 0) {
                j = out->n++;
                out->names[j] = name; out->sets[j] = s->sets[k];
                b->merge_pos[name] = j;
            } else {
                out->sets[j] = set_union(b, out->sets[j], s->sets[k]);
            }
        }
    }
    for (int32_t k = 0; k < out->n; k++) b->merge_pos[out->names[k]] = -1;
    return out;
}

/* graphs._Builder.uses(expr): calls visit(name, node) for every variable or attribute read inside expr */
typedef void (*UseFn)(B *b, int32_t name, TSNode node, void *ctx);

static void walk_uses(B *b, TSNode expr, UseFn visit, void *ctx) {
    if (!present(expr) || b->fail) return;
    VEC(struct { TSNode n; TSNode parent; }) stack = {0};
    int oom = 0;
    int32_t at = idx(b, expr);
    typeof(*stack.v) first = {expr, at >= 0 && b->parent.v[at] >= 0 ? b->nodes.v[b->parent.v[at]] : ts_node_parent(expr)};
    VPUSH(stack, first, oom);
    while (stack.n && !oom && !b->fail) {
        typeof(*stack.v) top = stack.v[--stack.n];
        TSNode n = top.n;
        int k = sym_kind(n);
        if (k == K_IDENTIFIER) {
            TSNode p = top.parent;
            if (present(p)) {
                int pk = sym_kind(p);
                if (pk == K_ATTRIBUTE && ts_node_eq(field(p, FD_ATTRIBUTE), n)) continue;
                if (pk == K_KEYWORD_ARGUMENT && ts_node_eq(field(p, FD_NAME), n)) continue;
            }
            visit(b, text_name(b, n), n, ctx);
        } else if (k == K_ATTRIBUTE) {
            int32_t name = dotted_name(b, n);
            if (name >= 0 && b->name_len[name] > 0) visit(b, name, n, ctx);
        }
        if (k != K_FUNCTION_DEFINITION && k != K_CLASS_DEFINITION && k != K_LAMBDA) {
            uint32_t nc; TSNode *cs = children(b, n, 1, &nc);
            for (uint32_t i = 0; i < nc; i++) {
                typeof(*stack.v) item = {cs[i], n};
                VPUSH(stack, item, oom);
            }
        }
    }
    free(stack.v);
    if (oom) fail(b, 2);
}

/* graphs._Builder._read: a dfg edge from every reaching definition to each use */
static void read_use(B *b, int32_t name, TSNode node, void *ctx) {
    const Set *s = defs_get((const Defs *)ctx, name);
    if (!s) return;
    int32_t j = idx(b, node);
    if (j < 0) return;
    for (int32_t k = 0; k < s->n; k++) if (s->v[k] != j) add_edge(b, s->v[k], j, C.edge_dfg);
}

static void read_expr(B *b, TSNode expr, const Defs *defs) {
    walk_uses(b, expr, read_use, (void *)defs);
}

/* -- guards (graphs._Builder.guards / _guard / _checked / _exits, and _validated) ------------------ */
typedef struct { int32_t name; int32_t guard; } Checked;
typedef VEC(Checked) CheckedList;
typedef struct { CheckedList *out; int32_t guard; } CheckCtx;

static void collect_checked(B *b, int32_t name, TSNode node, void *ctx) {
    (void)node;
    CheckCtx *c = ctx;
    Checked item = {name, c->guard};
    int oom = 0;
    VPUSH(*c->out, item, oom);
    if (oom) fail(b, 2);
}

static int is_sanitizer_node(B *b, TSNode n) {
    int32_t j = idx(b, n);
    return j >= 0 && (b->marks.v[j] & C.bit_sanitizer);
}

/* _checked: names a sanitizer call checks (its receiver and its arguments), appended to out */
static void checked_names(B *b, TSNode call, CheckedList *out) {
    CheckCtx ctx = {out, idx(b, call)};
    TSNode fn = field(call, FD_FUNCTION);
    if (present(fn) && sym_kind(fn) == K_ATTRIBUTE) walk_uses(b, field(fn, FD_OBJECT), collect_checked, &ctx);
    walk_uses(b, field(call, FD_ARGUMENTS), collect_checked, &ctx);
}

/* _guard: 1 and the names (into out) with *holds = valid-when-true, or 0 when n is no guard */
static int guard_of(B *b, TSNode n, CheckedList *out, int *holds) {
    int k = sym_kind(n);
    if (k == K_CALL && is_sanitizer_node(b, n)) { checked_names(b, n, out); *holds = 1; return 1; }
    if (strcmp(ts_node_type(n), "comparison_operator") != 0 || ts_node_named_child_count(n) != 2) return 0;
    uint32_t total = ts_node_child_count(n);
    int ops = 0, in = 0;
    for (uint32_t i = 0; i < total; i++) {
        TSNode c = ts_node_child(n, i);
        if (ts_node_is_named(c)) continue;
        ops++;
        const char *t = ts_node_type(c);
        in = strcmp(t, "in") == 0 ? 1 : strcmp(t, "not in") == 0 ? 2 : 0;
    }
    if (ops != 1 || !in) return 0;
    int32_t j = idx(b, n);
    if (j < 0) return 0;
    TSNode left = ts_node_named_child(n, 0), right = ts_node_named_child(n, 1);
    int deny = sym_kind(left) == K_STRING;
    b->marks.v[j] |= (uint8_t)C.bit_sanitizer;
    CheckCtx ctx = {out, j};
    walk_uses(b, deny ? right : left, collect_checked, &ctx);
    *holds = (in == 1) != deny;
    return 1;
}

/* guards(cond): names valid where it holds (passed) and where it does not (failed), in graphs.py's order */
static void guards(B *b, TSNode cond, CheckedList *passed, CheckedList *failed) {
    if (!present(cond)) return;
    VEC(struct { TSNode n; int negated; }) stack = {0};
    int oom = 0;
    typeof(*stack.v) first = {cond, 0};
    VPUSH(stack, first, oom);
    CheckedList found = {0};
    while (stack.n && !oom && !b->fail) {
        typeof(*stack.v) top = stack.v[--stack.n];
        TSNode n = top.n;
        if (strcmp(ts_node_type(n), "not_operator") == 0) {
            TSNode arg = field(n, FD_ARGUMENT);
            if (present(arg)) { typeof(*stack.v) item = {arg, !top.negated}; VPUSH(stack, item, oom); }
            continue;
        }
        int holds = 0;
        found.n = 0;
        if (guard_of(b, n, &found, &holds)) {
            CheckedList *into = holds != top.negated ? passed : failed;
            for (size_t i = 0; i < found.n && !oom; i++) VPUSH(*into, found.v[i], oom);
            continue;
        }
        int k = sym_kind(n);
        if (k == K_LAMBDA || k == K_FUNCTION_DEFINITION || k == K_CLASS_DEFINITION) continue;
        uint32_t nc; TSNode *cs = children(b, n, 1, &nc);
        for (uint32_t i = nc; i-- > 0 && !oom;) { typeof(*stack.v) item = {cs[i], top.negated}; VPUSH(stack, item, oom); }
    }
    free(stack.v);
    free(found.v);
    if (oom) fail(b, 2);
}

static Defs *validated(B *b, const Defs *defs, const CheckedList *checked) {
    if (!checked->n) return (Defs *)defs;
    Defs *d = defs_clone(b, defs, (int32_t)checked->n);
    for (size_t i = 0; d && i < checked->n && !b->fail; i++)
        if (checked->v[i].name >= 0 && checked->v[i].guard >= 0)
            defs_put(b, d, checked->v[i].name, set_of(b, checked->v[i].guard));
    return d;
}

/* _exits: the block's last statement leaves the function (return, raise, abort(), exit(), _exit()) */
static int leaves(B *b, TSNode block) {
    if (!present(block)) return 0;
    uint32_t n;
    TSNode *stmts = stmts_of(b, block, &n);
    if (!stmts || !n) return 0;
    TSNode last = stmts[n - 1];
    const char *t = ts_node_type(last);
    if (strcmp(t, "return_statement") == 0 || strcmp(t, "raise_statement") == 0) return 1;
    if (sym_kind(last) != K_EXPRESSION_STATEMENT || !ts_node_named_child_count(last)) return 0;
    TSNode expr = ts_node_named_child(last, 0);
    if (sym_kind(expr) != K_CALL) return 0;
    TSNode fn = field(expr, FD_FUNCTION), name = fn;
    if (!present(fn)) return 0;
    if (sym_kind(fn) == K_ATTRIBUTE) name = field(fn, FD_ATTRIBUTE);
    else if (sym_kind(fn) != K_IDENTIFIER) return 0;
    if (!present(name)) return 0;
    return text_is(b, name, "abort") || text_is(b, name, "exit") || text_is(b, name, "_exit");
}

/* targets(node): calls fn for (name, node, strong) */
typedef struct { int32_t name; TSNode node; int strong; } Target;
typedef VEC(Target) Targets;

static void targets(B *b, TSNode node, Targets *out, int depth) {
    if (!present(node) || b->fail) return;
    if (depth > MAX_DEPTH) { fail(b, 1); return; }
    int k = sym_kind(node), oom = 0;
    if (k == K_IDENTIFIER) {
        Target t = {text_name(b, node), node, 1};
        VPUSH(*out, t, oom);
    } else if (k == K_ATTRIBUTE && dotted(b, node) > 0) {
        Target t = {dotted_name(b, node), node, 1};
        VPUSH(*out, t, oom);
    } else if (k == K_SUBSCRIPT) {
        TSNode base = field(node, FD_VALUE);
        if (present(base) && dotted(b, base) > 0) {
            Target t = {dotted_name(b, base), base, 0};
            VPUSH(*out, t, oom);
        }
    } else if (k == K_TARGET_GROUP) {
        uint32_t nc; TSNode *cs = children(b, node, 1, &nc);
        for (uint32_t i = 0; i < nc; i++) targets(b, cs[i], out, depth + 1);
    }
    if (oom) fail(b, 2);
}

static Defs *bind(B *b, TSNode target, TSNode value, const Defs *defs) {
    Targets ts = {0};
    targets(b, target, &ts, 0);
    Defs *d = defs_clone(b, defs, (int32_t)ts.n);
    for (size_t i = 0; d && i < ts.n && !b->fail; i++) {
        int32_t j = idx(b, ts.v[i].node);
        if (j < 0 || ts.v[i].name < 0) continue;
        if (present(value)) edge(b, value, ts.v[i].node, C.edge_dfg);
        const Set *old = defs_get(d, ts.v[i].name);
        Set s = set_of(b, j);
        defs_put(b, d, ts.v[i].name, ts.v[i].strong || !old ? s : set_union(b, *old, s));
    }
    free(ts.v);
    return d;
}

static Defs *dfg_stmt(B *b, TSNode stmt, Defs *defs);

static Defs *dfg_block(B *b, TSNode block, Defs *defs) {
    if (!present(block) || b->fail) return defs;
    if (++b->depth > MAX_DEPTH) { fail(b, 1); return defs; }
    uint32_t n;
    TSNode *stmts = stmts_of(b, block, &n);
    for (uint32_t s = 0; s < n && !b->fail; s++) defs = dfg_stmt(b, stmts[s], defs);
    b->depth--;
    return defs;
}

static Defs *dfg_expr(B *b, TSNode expr, Defs *defs) {
    int k = sym_kind(expr);
    if (k == K_ASSIGNMENT) {
        TSNode right = field(expr, FD_RIGHT);
        read_expr(b, right, defs);
        return bind(b, field(expr, FD_LEFT), right, defs);
    }
    if (k == K_AUGMENTED_ASSIGNMENT) {
        TSNode left = field(expr, FD_LEFT), right = field(expr, FD_RIGHT);
        read_expr(b, left, defs);
        read_expr(b, right, defs);
        Defs *out = bind(b, left, right, defs);
        Targets ts = {0};
        targets(b, left, &ts, 0);
        for (size_t i = 0; out && i < ts.n && !b->fail; i++) {  /* out[name] |= previous.get(name, set()) */
            const Set *now = defs_get(out, ts.v[i].name), *before = defs_get(defs, ts.v[i].name);
            if (!now) { fail(b, 1); break; }  /* graphs.py raises KeyError here: let it */
            if (before) defs_put(b, out, ts.v[i].name, set_union(b, *now, *before));
        }
        free(ts.v);
        return out;
    }
    read_expr(b, expr, defs);
    return defs;
}

static Defs *dfg_stmt(B *b, TSNode stmt, Defs *defs) {
    if (b->fail) return defs;
    int t = sym_kind(stmt);
    if (t == K_DECORATED_DEFINITION) {
        TSNode d = field(stmt, FD_DEFINITION);
        if (!present(d)) { fail(b, 1); return defs; }  /* graphs.py recurses forever: RecursionError */
        if (++b->depth > MAX_DEPTH) { fail(b, 1); return defs; }
        Defs *r = dfg_stmt(b, d, defs);
        b->depth--;
        return r;
    }
    if (t == K_FUNCTION_DEFINITION) {
        TSNode params = field(stmt, FD_PARAMETERS);
        uint32_t np = 0; TSNode *ps = present(params) ? children(b, params, 1, &np) : NULL;
        Defs *inner = defs_clone(b, defs, (int32_t)np);
        for (uint32_t q = 0; inner && q < np; q++) {
            TSNode p = ps[q], name = p;
            if (sym_kind(p) != K_IDENTIFIER) {
                name = field(p, FD_NAME);
                if (!present(name)) name = ts_node_named_child_count(p) ? ts_node_named_child(p, 0) : (TSNode){0};
            }
            if (!present(name) || idx(b, name) < 0) continue;
            read_expr(b, field(p, FD_VALUE), defs);
            defs_put(b, inner, text_name(b, name), set_of(b, idx(b, name)));
        }
        dfg_block(b, field(stmt, FD_BODY), inner);
        return bind(b, field(stmt, FD_NAME), (TSNode){0}, defs);
    }
    if (t == K_EXPRESSION_STATEMENT) {
        uint32_t nc; TSNode *cs = children(b, stmt, 1, &nc);
        for (uint32_t i = 0; i < nc && defs; i++) defs = dfg_expr(b, cs[i], defs);
        if (nc == 1 && defs && sym_kind(cs[0]) == K_CALL && is_sanitizer_node(b, cs[0])) {
            CheckedList checked = {0};  /* validate_key(name): name is checked from here on */
            checked_names(b, cs[0], &checked);
            defs = validated(b, defs, &checked);
            free(checked.v);
        }
        return defs;
    }
    if (t == K_IF_STATEMENT) {  /* graphs._Builder.dfg_if */
        TSNode cond = field(stmt, FD_CONDITION), consequence = field(stmt, FD_CONSEQUENCE);
        read_expr(b, cond, defs);
        CheckedList passed = {0}, failed = {0};
        guards(b, cond, &passed, &failed);
        uint32_t na; TSNode *alts = field_children(b, stmt, FD_ALTERNATIVE, &na);
        Defs **branches = arena_alloc(&b->arena, (na + 2) * sizeof(Defs *));
        if (!branches) { fail(b, 2); free(passed.v); free(failed.v); return defs; }
        int nb = 0, has_else = 0;
        Defs *out = dfg_block(b, consequence, validated(b, defs, &passed));
        int left = leaves(b, consequence);
        if (!left) branches[nb++] = out;
        for (uint32_t a = 0; a < na && !b->fail; a++) {
            Defs *inside = validated(b, defs, &failed);
            read_expr(b, field(alts[a], FD_CONDITION), inside);
            TSNode body = field(alts[a], FD_CONSEQUENCE);
            if (!present(body)) body = field(alts[a], FD_BODY);
            Defs *after = dfg_block(b, body, inside);
            if (!leaves(b, body)) branches[nb++] = after;
            has_else |= sym_kind(alts[a]) == K_ELSE_CLAUSE;
        }
        if (!has_else) branches[nb++] = na ? defs : validated(b, defs, &failed);  /* fell through a lone if */
        free(passed.v); free(failed.v);
        return merge(b, branches, nb);
    }
    if (t == K_FOR_STATEMENT) {
        TSNode right = field(stmt, FD_RIGHT), body = field(stmt, FD_BODY);
        read_expr(b, right, defs);
        Defs *loop = bind(b, field(stmt, FD_LEFT), right, defs);
        Defs *once = dfg_block(b, body, loop);
        Defs *pair[2] = {loop, once};
        Defs *twice = dfg_block(b, body, merge(b, pair, 2));  /* loop-carried */
        Defs *all[3] = {defs, once, twice};
        return merge(b, all, 3);
    }
    if (t == K_WHILE_STATEMENT) {
        read_expr(b, field(stmt, FD_CONDITION), defs);
        Defs *once = dfg_block(b, field(stmt, FD_BODY), defs);
        Defs *all[2] = {defs, once};
        return merge(b, all, 2);
    }
    if (t == K_WITH_STATEMENT) {
        uint32_t nc; TSNode *clauses = children(b, stmt, 1, &nc);
        for (uint32_t c = 0; c < nc && !b->fail; c++) {
            if (sym_kind(clauses[c]) != K_WITH_CLAUSE) continue;
            uint32_t ni; TSNode *items = children(b, clauses[c], 1, &ni);
            for (uint32_t i = 0; i < ni && !b->fail; i++) {
                TSNode value = field(items[i], FD_VALUE);
                if (present(value) && sym_kind(value) == K_AS_PATTERN) {
                    TSNode src = ts_node_named_child_count(value) ? ts_node_named_child(value, 0) : (TSNode){0};
                    read_expr(b, src, defs);
                    defs = bind(b, field(value, FD_ALIAS), src, defs);
                } else {
                    read_expr(b, value, defs);
                }
            }
        }
        return dfg_block(b, field(stmt, FD_BODY), defs);
    }
    if (t == K_TRY_STATEMENT) {
        Defs *after = dfg_block(b, field(stmt, FD_BODY), defs);
        uint32_t nc; TSNode *cs = children(b, stmt, 1, &nc);
        Defs **outs = arena_alloc(&b->arena, (nc + 1) * sizeof(Defs *));
        if (!outs) { fail(b, 2); return defs; }
        int no = 0;
        outs[no++] = after;
        for (uint32_t i = 0; i < nc; i++) {
            int k = sym_kind(cs[i]);
            if (k == K_EXCEPT_CLAUSE || k == K_ELSE_CLAUSE || k == K_FINALLY_CLAUSE) {
                TSNode body = first_block(b, cs[i]);
                Defs *pair[2] = {defs, after};
                outs[no++] = dfg_block(b, body, merge(b, pair, 2));
            }
        }
        return merge(b, outs, no);
    }
    if (t == K_CLASS_DEFINITION) {
        dfg_block(b, field(stmt, FD_BODY), defs_clone(b, defs, 0));
        return defs;
    }
    read_expr(b, stmt, defs);
    return defs;
}

/* -- taint (graphs._Builder.propagate_taint) ---------------------------------------------------------- */
/* Sort edges by (src, dst, type) and drop duplicates: two stable counting sorts, by (dst, type) and
 * then by src, so linear in nodes + edges whatever order the edges came in.  (An insertion sort inside
 * each src bucket was quadratic when one definition reaches thousands of uses, which walk_uses lists
 * in reverse: a parameter read all along a chain of conditional expressions, 1 MB in 16 s.) */
static void sort_edges(B *b) {
    size_t n = b->nodes.n, ne = b->edges.n;
    if (ne == 0) return;
    int32_t tmin = b->edges.v[0].t, tmax = tmin;
    for (size_t e = 1; e < ne; e++) {
        int32_t t = b->edges.v[e].t;
        if (t < tmin) tmin = t;
        if (t > tmax) tmax = t;
    }
    size_t types = (size_t)((int64_t)tmax - tmin) + 1, keys = n * types;
    size_t *count = calloc(keys + 1, sizeof(size_t));
    Edge *tmp = malloc(ne * sizeof(Edge));
    if (!count || !tmp) { free(count); free(tmp); fail(b, 2); return; }
    Edge *v = b->edges.v;
#define DT_KEY(x) ((size_t)(x).d * types + (size_t)((x).t - tmin))
    for (size_t e = 0; e < ne; e++) count[DT_KEY(v[e]) + 1]++;
    for (size_t k = 0; k < keys; k++) count[k + 1] += count[k];
    for (size_t e = 0; e < ne; e++) tmp[count[DT_KEY(v[e])]++] = v[e];
#undef DT_KEY
    memset(count, 0, (n + 1) * sizeof(size_t));
    for (size_t e = 0; e < ne; e++) count[(size_t)tmp[e].s + 1]++;
    for (size_t i = 0; i < n; i++) count[i + 1] += count[i];
    for (size_t e = 0; e < ne; e++) v[count[(size_t)tmp[e].s]++] = tmp[e];
    size_t w = 0;
    for (size_t e = 0; e < ne; e++)
        if (w == 0 || v[e].s != v[w - 1].s || v[e].d != v[w - 1].d || v[e].t != v[w - 1].t) v[w++] = v[e];
    b->edges.n = w;
    free(count); free(tmp);
}

static int builds_string(B *b, int32_t i) {
    TSNode n = b->nodes.v[i];
    int k = C.kind[b->sym.v[i]];
    if (k == K_BINARY_OPERATOR || k == K_CONCATENATED_STRING) return 1;
    if (k == K_STRING) {
        uint32_t nc; TSNode *cs = children(b, n, 0, &nc);
        for (uint32_t c = 0; c < nc; c++) if (sym_kind(cs[c]) == K_INTERPOLATION) return 1;
        return 0;
    }
    if (k == K_CALL) {
        TSNode fn = field(n, FD_FUNCTION);
        if (!present(fn) || sym_kind(fn) != K_ATTRIBUTE) return 0;
        TSNode attr = field(fn, FD_ATTRIBUTE);
        return present(attr) && (text_is(b, attr, "format") || text_is(b, attr, "join") || text_is(b, attr, "replace"));
    }
    return 0;
}

/* nodes reachable from the seeds (seen[i] == 1) along flows, never entering a sanitizer */
static void reach(B *b, uint8_t *seen, const int32_t *ptr, const int32_t *adj, int32_t *stack) {
    size_t n = b->nodes.n, top = 0;
    for (size_t i = 0; i < n; i++) if (seen[i]) stack[top++] = (int32_t)i;
    while (top) {
        int32_t i = stack[--top];
        for (int32_t e = ptr[i]; e < ptr[i + 1]; e++) {
            int32_t j = adj[e];
            if (!seen[j] && !(b->marks.v[j] & C.bit_sanitizer)) { seen[j] = 1; stack[top++] = j; }
        }
    }
}

static void propagate_taint(B *b) {
    size_t n = b->nodes.n, ne = b->edges.n;
    int32_t *ptr = calloc(n + 1, sizeof(int32_t)), *adj = malloc((ne + 1) * sizeof(int32_t));
    int32_t *fill = calloc(n + 1, sizeof(int32_t)), *stack = malloc((n + ne + 1) * sizeof(int32_t));
    uint8_t *tainted = calloc(n + 1, 1), *injected = calloc(n + 1, 1);
    if (!ptr || !adj || !fill || !stack || !tainted || !injected) { fail(b, 2); goto done; }
    for (int pass = 0; pass < 2; pass++) {  /* count, then fill (CSR) */
        for (size_t e = 0; e < ne; e++) {
            Edge *x = &b->edges.v[e];
            int32_t from = -1, to = -1;
            if (x->t == C.edge_dfg || x->t == C.edge_call) { from = x->s; to = x->d; }
            else if (x->t == C.edge_ast && (C.flags[b->sym.v[x->s]] & F_CARRIER)) { from = x->d; to = x->s; }
            if (from < 0) continue;
            if (pass == 0) ptr[from + 1]++;
            else adj[ptr[from] + fill[from]++] = to;
        }
        if (pass == 0) for (size_t i = 0; i < n; i++) ptr[i + 1] += ptr[i];
    }
    for (size_t i = 0; i < n; i++)
        tainted[i] = (b->marks.v[i] & C.bit_source) && !(b->marks.v[i] & C.bit_sanitizer);
    reach(b, tainted, ptr, adj, stack);
    for (size_t i = 0; i < n; i++) injected[i] = tainted[i] && builds_string(b, (int32_t)i);
    reach(b, injected, ptr, adj, stack);
    for (size_t i = 0; i < n; i++) if (tainted[i]) b->marks.v[i] |= (uint8_t)C.bit_tainted;
    for (size_t s = 0; s < b->sinks.n; s++) {
        SinkArgs *a = &b->sinks.v[s];
        const uint8_t *set = a->injection ? injected : tainted;
        if (a->unconditional) { b->marks.v[a->node] |= (uint8_t)C.bit_tainted_sink; continue; }
        for (int32_t k = 0; k < a->n; k++)
            if (set[a->points[k]]) { b->marks.v[a->node] |= (uint8_t)C.bit_tainted_sink; break; }
    }
done:
    free(ptr); free(adj); free(fill); free(stack); free(tainted); free(injected);
}

/* -- one graph, appended to out ------------------------------------------------------------------- */
static int is_ascii(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) if ((uint8_t)s[i] & 0x80) return 0;
    return 1;
}

static void reset(B *b) {
    arena_reset(&b->arena);
    b->fail = 0; b->depth = 0;
    b->indexed = 0;
    b->kids.n = b->n_kids.n = b->parent.n = 0;
    b->nodes.n = b->sym.n = b->marks.n = b->edges.n = b->sinks.n = 0;
    b->names_len = 0; b->n_names = 0;
    if (b->name_slot) for (size_t i = 0; i < b->name_cap; i++) b->name_slot[i] = -1;
}

/* 0: appended; 1: hand to graphs.py; 2: out of memory */
static int build_one(B *b, TSParser *parser, const char *src, size_t len, Out *out) {
    if (!is_ascii(src, len)) return 1;
    reset(b);
    b->src = src;
    TSTree *tree = ts_parser_parse_string(parser, NULL, src, (uint32_t)len);
    if (tree == NULL) return 1;
    TSNode root = ts_tree_root_node(tree);
    collect(b, root);
    if (!b->fail) { build_index(b); b->indexed = !b->fail; }
    if (!b->fail) mark_and_link_calls(b);
    if (!b->fail) cfg_block(b, root, (Nodes){0, NULL});
    if (!b->fail) { b->depth = 0; dfg_block(b, root, defs_new(b, 0)); }
    if (!b->fail) sort_edges(b);
    if (!b->fail) propagate_taint(b);
    int status = b->fail;
    if (status == 0) {
        int oom = 0;
        for (size_t i = 0; i < b->nodes.n && !oom; i++) {
            TSNode n = b->nodes.v[i];
            int16_t tok[MAX_TOK];
            node_tokens(b, n, tok);
            VPUSH(out->type, C.vocab[b->sym.v[i]], oom);
            for (int k = 0; k < C.subtokens; k++) VPUSH(out->tokens, tok[k], oom);
            VPUSH(out->marks, b->marks.v[i], oom);
            VPUSH(out->line, (int32_t)ts_node_start_point(n).row + 1, oom);
            VPUSH(out->end_line, (int32_t)ts_node_end_point(n).row + 1, oom);
        }
        for (size_t e = 0; e < b->edges.n && !oom; e++) {
            VPUSH(out->edges, b->edges.v[e].s, oom);
            VPUSH(out->edges, b->edges.v[e].d, oom);
            VPUSH(out->edges, b->edges.v[e].t, oom);
        }
        VPUSH(out->node_count, (int64_t)b->nodes.n, oom);
        VPUSH(out->edge_count, (int64_t)b->edges.n, oom);
        if (b->fail) status = b->fail;  /* node_tokens may run out of memory */
        if (oom) status = 2;
    }
    if (b->has_cursor) { ts_tree_cursor_delete(&b->cursor); b->has_cursor = 0; }
    ts_tree_delete(tree);
    return status;
}

static void builder_free(B *b) {
    arena_free(&b->arena);
    free(b->nodes.v); free(b->kids.v); free(b->n_kids.v); free(b->parent.v); free(b->sym.v); free(b->marks.v); free(b->edges.v); free(b->sinks.v);
    free(b->keys); free(b->vals);
    free(b->names_buf); free(b->name_off); free(b->name_len); free(b->name_slot);
    free(b->scratch);
    free(b->merge_pos);
}

/* ------------------------------------------------------------------------------------------------- */
/* Python interface                                                                                   */

static PyObject *bytes_of(const void *v, size_t n) {
    return PyBytes_FromStringAndSize(n ? (const char *)v : "", (Py_ssize_t)n);
}

PyDoc_STRVAR(build_doc,
"build(codes: list[bytes]) -> (arrays: dict[str, bytes], handed_back: list[int])\n\n"
"Program graphs of UTF-8 encoded functions, packed as dataset.pack_graphs packs them\n"
"(raw little-endian buffers; node_count / edge_count per function).  Functions listed in\n"
"handed_back got no graph here (non-ASCII or deeply nested code): build them with graphs.py.\n"
"The GIL is released while building.");

static PyObject *build(PyObject *self, PyObject *arg) {
    if (!C.ready) { PyErr_SetString(PyExc_RuntimeError, "_fastgraph.configure() was not called"); return NULL; }
    PyObject *seq = PySequence_Fast(arg, "build() takes a list of bytes");
    if (!seq) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    const char **srcs = calloc((size_t)count + 1, sizeof(char *));
    size_t *lens = calloc((size_t)count + 1, sizeof(size_t));
    int *status = calloc((size_t)count + 1, sizeof(int));
    if (!srcs || !lens || !status) { free(srcs); free(lens); free(status); Py_DECREF(seq); return PyErr_NoMemory(); }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        char *s; Py_ssize_t n;
        if (PyBytes_AsStringAndSize(item, &s, &n) < 0) {
            free(srcs); free(lens); free(status); Py_DECREF(seq); return NULL;
        }
        srcs[i] = s; lens[i] = (size_t)n;
    }
    Out out = {0};
    int oom = 0;
    Py_BEGIN_ALLOW_THREADS
    TSParser *parser = ts_parser_new();
    B b = {0};
    if (parser && ts_parser_set_language(parser, C.language)) {
        for (Py_ssize_t i = 0; i < count && !oom; i++) {
            status[i] = build_one(&b, parser, srcs[i], lens[i], &out);
            if (status[i] == 2) oom = 1;
        }
    } else {
        oom = 1;
    }
    builder_free(&b);
    if (parser) ts_parser_delete(parser);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL, *arrays = NULL, *handed = NULL;
    if (oom) { PyErr_NoMemory(); goto done; }
    arrays = PyDict_New();
    handed = PyList_New(0);
    if (!arrays || !handed) goto done;
    struct { const char *name; const void *v; size_t n; } parts[] = {
        {"node_type", out.type.v, out.type.n * sizeof(int16_t)},
        {"node_tokens", out.tokens.v, out.tokens.n * sizeof(int16_t)},
        {"node_marks", out.marks.v, out.marks.n},
        {"node_line", out.line.v, out.line.n * sizeof(int32_t)},
        {"node_end_line", out.end_line.v, out.end_line.n * sizeof(int32_t)},
        {"edges", out.edges.v, out.edges.n * sizeof(int32_t)},
        {"node_count", out.node_count.v, out.node_count.n * sizeof(int64_t)},
        {"edge_count", out.edge_count.v, out.edge_count.n * sizeof(int64_t)},
    };
    for (size_t p = 0; p < sizeof parts / sizeof parts[0]; p++) {
        PyObject *v = bytes_of(parts[p].v, parts[p].n);
        if (!v || PyDict_SetItemString(arrays, parts[p].name, v) < 0) { Py_XDECREF(v); goto done; }
        Py_DECREF(v);
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (status[i] == 0) continue;
        PyObject *v = PyLong_FromSsize_t(i);
        if (!v || PyList_Append(handed, v) < 0) { Py_XDECREF(v); goto done; }
        Py_DECREF(v);
    }
    result = PyTuple_Pack(2, arrays, handed);
done:
    Py_XDECREF(arrays); Py_XDECREF(handed);
    free(out.type.v); free(out.tokens.v); free(out.marks.v); free(out.line.v); free(out.end_line.v);
    free(out.edges.v); free(out.node_count.v); free(out.edge_count.v);
    free(srcs); free(lens); free(status);
    Py_DECREF(seq);
    return result;
}

/* -- configure ---------------------------------------------------------------------------------------- */
static char *dup_str(PyObject *s) {
    if (s == Py_None) return NULL;
    const char *u = PyUnicode_AsUTF8(s);
    if (!u) return NULL;
    char *c = strdup(u);
    if (!c) PyErr_NoMemory();
    return c;
}

/* A sequence of str → a NULL-terminated array of copies (count in *n). */
static char **str_list(PyObject *seq, int *n) {
    *n = (int)PySequence_Size(seq);
    if (*n < 0) { *n = 0; return NULL; }
    char **out = calloc((size_t)*n + 1, sizeof(char *));
    for (int w = 0; out && w < *n; w++) {
        PyObject *item = PySequence_GetItem(seq, w);
        out[w] = item ? dup_str(item) : NULL;
        Py_XDECREF(item);
    }
    return out;
}

static int in_names(PyObject *names, const char *name) {
    PyObject *s = PyUnicode_FromString(name);
    if (!s) return -1;
    int r = PySequence_Contains(names, s);
    Py_DECREF(s);
    return r;
}

PyDoc_STRVAR(configure_doc,
"configure(language, vocabulary, skipped, leaves, operators, carriers, marks, rules,\n"
"          source_attributes, parameter_sources, edge_ids, subtokens, buckets)\n\n"
"Called once by streamguard_ml.fastgraph with graphs.py's own tables.");

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *capsule, *vocab, *skipped, *leaves, *operators, *carriers, *rules, *attrs;
    int bits[5], edges[4], parameter_sources, subtokens, buckets;
    if (!PyArg_ParseTuple(args, "OOOOOO(iiiii)OOp(iiii)ii", &capsule, &vocab, &skipped, &leaves, &operators,
                          &carriers, &bits[0], &bits[1], &bits[2], &bits[3], &bits[4], &rules, &attrs,
                          &parameter_sources, &edges[0], &edges[1], &edges[2], &edges[3], &subtokens, &buckets))
        return NULL;
    if (subtokens < 1 || subtokens > MAX_TOK || buckets < 2) {
        PyErr_SetString(PyExc_ValueError, "subtokens must be 1..16 and buckets at least 2");
        return NULL;
    }
    const TSLanguage *language = PyCapsule_GetPointer(capsule, "tree_sitter.Language");
    if (!language) return NULL;
    if (C.ready) Py_RETURN_NONE;  /* tables are module constants: configuring twice changes nothing */
    uint32_t n = ts_language_symbol_count(language);  /* + one slot for ERROR, see slot() */
    C.flags = calloc(n + 1, 1); C.kind = calloc(n + 1, 1);
    C.vocab = calloc(n + 1, sizeof(int16_t)); C.name_bucket = calloc(n + 1, sizeof(int16_t));
    if (!C.flags || !C.kind || !C.vocab || !C.name_bucket) return PyErr_NoMemory();
    C.buckets = buckets; C.subtokens = subtokens;
    for (uint32_t s = 0; s <= n; s++) {
        const char *name = ts_language_symbol_name(language, s < n ? (TSSymbol)s : (TSSymbol)-1);
        if (!name) continue;
        int f = 0, r;
        if ((r = in_names(skipped, name)) < 0) return NULL; else if (r) f |= F_SKIPPED;
        if ((r = in_names(leaves, name)) < 0) return NULL; else if (r) f |= F_LEAF;
        if ((r = in_names(operators, name)) < 0) return NULL; else if (r) f |= F_OPERATOR;
        if ((r = in_names(carriers, name)) < 0) return NULL; else if (r) f |= F_CARRIER;
        C.flags[s] = (uint8_t)f;
        for (size_t k = 0; k < sizeof KIND_NAMES / sizeof KIND_NAMES[0]; k++)
            if (strcmp(KIND_NAMES[k].name, name) == 0) C.kind[s] = (uint8_t)KIND_NAMES[k].kind;
        PyObject *id = PyDict_GetItemString(vocab, name);
        C.vocab[s] = id ? (int16_t)PyLong_AsLong(id) : 0;
        C.name_bucket[s] = bucket_of(name, strlen(name), 0);
    }
    if (PyErr_Occurred()) return NULL;
    for (int f = 0; f < FD_COUNT; f++)
        C.field[f] = ts_language_field_id_for_name(language, FIELD_NAMES[f], (uint32_t)strlen(FIELD_NAMES[f]));
    /* rules: (mark, call, builtin, words, keyword, min_args, args or None, injection, if_text or None,
     *         unless_text, unconditional, safe, max_args) */
    PyObject *rseq = PySequence_Fast(rules, "rules must be a sequence");
    if (!rseq) return NULL;
    C.n_rules = (int)PySequence_Fast_GET_SIZE(rseq);
    C.rules = calloc((size_t)C.n_rules + 1, sizeof(Rule));
    for (int i = 0; i < C.n_rules; i++) {
        Rule *r = &C.rules[i];
        PyObject *call, *words, *keyword, *rargs, *if_text, *unless_text;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(rseq, i), "iOpOOiOpOOppi", &r->mark, &call, &r->builtin,
                              &words, &keyword, &r->min_args, &rargs, &r->injection, &if_text, &unless_text,
                              &r->unconditional, &r->safe, &r->max_args)) { Py_DECREF(rseq); return NULL; }
        r->call = dup_str(call); r->keyword = dup_str(keyword);
        r->words = str_list(words, &r->n_words);
        r->has_if = if_text != Py_None;
        if (r->has_if) r->if_text = str_list(if_text, &r->n_if);
        r->unless_text = str_list(unless_text, &r->n_unless);
        r->has_args = rargs != Py_None;
        if (r->has_args) {
            r->n_args = (int)PySequence_Size(rargs);
            r->args = calloc((size_t)r->n_args + 1, sizeof(int));
            for (int a = 0; a < r->n_args; a++) {
                PyObject *item = PySequence_GetItem(rargs, a);
                r->args[a] = item ? (int)PyLong_AsLong(item) : -1;
                Py_XDECREF(item);
            }
        }
        if (PyErr_Occurred()) { Py_DECREF(rseq); return NULL; }
    }
    Py_DECREF(rseq);
    C.n_source_attributes = (int)PySequence_Size(attrs);
    C.source_attributes = calloc((size_t)C.n_source_attributes + 1, sizeof(char *));
    for (int i = 0; i < C.n_source_attributes; i++) {
        PyObject *item = PySequence_GetItem(attrs, i);
        C.source_attributes[i] = item ? dup_str(item) : NULL;
        Py_XDECREF(item);
    }
    if (PyErr_Occurred()) return NULL;
    C.parameter_sources = parameter_sources;
    C.bit_source = bits[0]; C.bit_sink = bits[1]; C.bit_sanitizer = bits[2];
    C.bit_tainted = bits[3]; C.bit_tainted_sink = bits[4];
    C.edge_ast = edges[0]; C.edge_cfg = edges[1]; C.edge_dfg = edges[2]; C.edge_call = edges[3];
    C.language = language; C.n_symbols = n;
    C.ready = 1;
    Py_RETURN_NONE;
}

static PyMethodDef METHODS[] = {
    {"configure", configure, METH_VARARGS, configure_doc},
    {"build", build, METH_O, build_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_fastgraph", "graphs.py's program-graph builder in C (see native/fastgraph.c).",
    -1, METHODS, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastgraph(void) {
    crc_init();
    return PyModule_Create(&MODULE);
}
