/*
 * OTLP ExportTraceServiceRequest (protobuf wire format) -> Arrow column buffers.
 *
 * The collector's hot path: one pass over the wire bytes, no per-value Python objects.
 * Output buffers are handed to pyarrow as-is (int32 offsets + UTF-8 data for strings,
 * little-endian int64/uint64 for times). Semantics mirror lqo.collector.model.otlp
 * (the pure-Python decoder, which is the reference and the fallback):
 *   - strings must be valid UTF-8 (as upb enforces for proto3 strings);
 *   - spans with a trace id != 16 bytes, span id != 8 bytes or parent id not 0/8 bytes
 *     are rejected (counted, not stored);
 *   - duplicate attribute keys: the last value wins, at the first key's position;
 *   - values render as pdata AsString: ints decimal, bools true/false, doubles shortest
 *     repr, bytes base64, arrays of scalars as compact JSON.
 * Values this file does not render (kvlists, nested arrays, doubles needing exponent
 * handling) are emitted as "" and reported as fixups (map id, value index, raw AnyValue
 * bytes) for Python to render with the reference code.
 *
 * Also, at the end, helpers for processors: merge_map (the attribute-map rebuild their writes
 * need), take_strings (their reads), key_codes (a batch's distinct attribute keys) and
 * decimal_strings (the cost processor's amounts).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ buffers */

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

static int buf_reserve(buf_t *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) { PyErr_NoMemory(); return -1; }
    b->data = p;
    b->cap = cap;
    return 0;
}

static int buf_put(buf_t *b, const void *src, size_t n) {
    if (buf_reserve(b, n)) return -1;
    if (n) memcpy(b->data + b->len, src, n);
    b->len += n;
    return 0;
}

static int buf_i32(buf_t *b, int32_t v) { return buf_put(b, &v, 4); }
static int buf_u64(buf_t *b, uint64_t v) { return buf_put(b, &v, 8); }
static int buf_u8(buf_t *b, uint8_t v) { return buf_put(b, &v, 1); }

static void buf_free(buf_t *b) { free(b->data); b->data = NULL; b->len = b->cap = 0; }

static PyObject *buf_bytes(buf_t *b) {
    return PyBytes_FromStringAndSize(b->data ? b->data : "", (Py_ssize_t)b->len);
}

/* Make room for one more element in a growable array of `size`-byte elements. */
static int grow(void **items, size_t *cap, size_t n, size_t size, size_t first_cap) {
    if (n < *cap) return 0;
    size_t new_cap = *cap ? *cap * 2 : first_cap;
    void *p = realloc(*items, new_cap * size);
    if (!p) { PyErr_NoMemory(); return -1; }
    *items = p;
    *cap = new_cap;
    return 0;
}

/* A string column: int32 offsets (starting with 0) + data. */
typedef struct {
    buf_t offs, data;
    int32_t n;
} strcol_t;

static int col_init(strcol_t *c) { c->n = 0; return buf_i32(&c->offs, 0); }

static int col_end_value(strcol_t *c) {
    if (c->data.len > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "batch too large: a string column exceeds 2 GiB");
        return -1;
    }
    c->n++;
    return buf_i32(&c->offs, (int32_t)c->data.len);
}

static int col_push(strcol_t *c, const char *s, size_t n) {
    if (buf_put(&c->data, s, n)) return -1;
    return col_end_value(c);
}

static void col_free(strcol_t *c) { buf_free(&c->offs); buf_free(&c->data); }

/* A map column: per-owner int32 offsets into parallel key and value columns. */
typedef struct {
    buf_t offs;
    strcol_t keys, vals;
} mapcol_t;

static int map_init(mapcol_t *m) {
    if (buf_i32(&m->offs, 0)) return -1;
    if (col_init(&m->keys)) return -1;
    return col_init(&m->vals);
}

static void map_free(mapcol_t *m) { buf_free(&m->offs); col_free(&m->keys); col_free(&m->vals); }

/* ------------------------------------------------------------------ wire format */

typedef struct {
    const uint8_t *p, *end;
} rd_t;

typedef struct {
    uint32_t field, wt;
    uint64_t u;            /* varint / fixed64 / fixed32 value */
    const uint8_t *ptr;    /* length-delimited slice */
    size_t len;
} fld_t;

static int bad(const char *msg) {
    PyErr_Format(PyExc_ValueError, "cannot decode protobuf ExportTraceServiceRequest: %s", msg);
    return -1;
}

static int rd_varint(rd_t *r, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) return bad("truncated varint");
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) { *out = v; return 0; }
    }
    return bad("varint too long");
}

/* Next field; returns 1 on a field, 0 at the end, -1 on error. */
static int rd_field(rd_t *r, fld_t *f) {
    if (r->p >= r->end) return 0;
    uint64_t tag;
    if (rd_varint(r, &tag)) return -1;
    f->field = (uint32_t)(tag >> 3);
    f->wt = (uint32_t)(tag & 7);
    if (f->field == 0) return bad("field number 0");
    switch (f->wt) {
    case 0:
        return rd_varint(r, &f->u) ? -1 : 1;
    case 1:
        if (r->end - r->p < 8) return bad("truncated fixed64");
        memcpy(&f->u, r->p, 8);
        r->p += 8;
        return 1;
    case 2: {
        uint64_t n;
        if (rd_varint(r, &n)) return -1;
        if (n > (uint64_t)(r->end - r->p)) return bad("length exceeds message");
        f->ptr = r->p;
        f->len = (size_t)n;
        r->p += n;
        return 1;
    }
    case 5: {
        if (r->end - r->p < 4) return bad("truncated fixed32");
        uint32_t v;
        memcpy(&v, r->p, 4);
        f->u = v;
        r->p += 4;
        return 1;
    }
    default:
        return bad("unsupported wire type");
    }
}

static int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        /* ASCII fast path, 8 bytes at a time: most payload text is ASCII */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t need;
        uint32_t cp;
        if ((c & 0xe0) == 0xc0) { need = 1; cp = c & 0x1f; }
        else if ((c & 0xf0) == 0xe0) { need = 2; cp = c & 0x0f; }
        else if ((c & 0xf8) == 0xf0) { need = 3; cp = c & 0x07; }
        else return 0;
        if (need > n - i - 1) return 0; /* truncated sequence */
        for (size_t k = 1; k <= need; k++) {
            uint8_t cc = s[i + k];
            if ((cc & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if ((need == 1 && cp < 0x80) || (need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000))
            return 0; /* overlong */
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += need + 1;
    }
    return 1;
}

static int check_utf8(const uint8_t *s, size_t n) {
    if (!utf8_valid(s, n)) return bad("string field contains invalid UTF-8");
    return 0;
}

/* ------------------------------------------------------------------ value rendering */

static const char HEX[] = "0123456789abcdef";
static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int put_hex(buf_t *b, const uint8_t *s, size_t n) {
    if (buf_reserve(b, 2 * n)) return -1;
    char *o = b->data + b->len;
    for (size_t i = 0; i < n; i++) { o[2 * i] = HEX[s[i] >> 4]; o[2 * i + 1] = HEX[s[i] & 15]; }
    b->len += 2 * n;
    return 0;
}

static int put_base64(buf_t *b, const uint8_t *s, size_t n) {
    if (buf_reserve(b, 4 * ((n + 2) / 3))) return -1;
    char *o = b->data + b->len;
    size_t i = 0, j = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        o[j++] = B64[v >> 18]; o[j++] = B64[(v >> 12) & 63]; o[j++] = B64[(v >> 6) & 63]; o[j++] = B64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        o[j++] = B64[v >> 18]; o[j++] = B64[(v >> 12) & 63]; o[j++] = '='; o[j++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        o[j++] = B64[v >> 18]; o[j++] = B64[(v >> 12) & 63]; o[j++] = B64[(v >> 6) & 63]; o[j++] = '=';
    }
    b->len += j;
    return 0;
}

static int put_int(buf_t *b, int64_t v) {
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    return buf_put(b, tmp, (size_t)n);
}

/* Shortest round-trip repr as Python's repr(float); returns 1 if it has an exponent. */
static int put_double_repr(buf_t *b, double x, int add_dot_0) {
    char *s = PyOS_double_to_string(x, 'r', 0, add_dot_0 ? Py_DTSF_ADD_DOT_0 : 0, NULL);
    if (!s) return -1;
    int has_exp = strchr(s, 'e') != NULL;
    int rc = buf_put(b, s, strlen(s));
    PyMem_Free(s);
    return rc ? -1 : has_exp;
}

/* JSON string as Python's json.dumps(ensure_ascii=False). */
static int put_json_string(buf_t *b, const uint8_t *s, size_t n) {
    if (buf_put(b, "\"", 1)) return -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        const char *esc = NULL;
        char u[7];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) { snprintf(u, sizeof u, "\\u%04x", c); esc = u; }
        }
        if (esc) { if (buf_put(b, esc, strlen(esc))) return -1; }
        else if (buf_put(b, &s[i], 1)) return -1;
    }
    return buf_put(b, "\"", 1);
}

enum { AV_NONE = 0, AV_STRING = 1, AV_BOOL = 2, AV_INT = 3, AV_DOUBLE = 4, AV_ARRAY = 5, AV_KVLIST = 6, AV_BYTES = 7 };

typedef struct {
    int kind;
    uint64_t u;
    const uint8_t *ptr;
    size_t len;
} anyval_t;

static int parse_anyvalue(const uint8_t *p, size_t n, anyval_t *v) {
    rd_t r = {p, p + n};
    fld_t f;
    int rc;
    v->kind = AV_NONE;
    while ((rc = rd_field(&r, &f)) == 1) {
        if (f.field >= 1 && f.field <= 7) {
            int want = (f.field == 2 || f.field == 3) ? 0 : (f.field == 4 ? 1 : 2);
            if ((int)f.wt != want) continue; /* wrong wire type: unknown field, skipped */
            v->kind = (int)f.field;
            v->u = f.u;
            v->ptr = f.ptr;
            v->len = f.len;
        }
    }
    if (rc < 0) return -1;
    if (v->kind == AV_STRING && check_utf8(v->ptr, v->len)) return -1;
    return 0;
}

/* JSON for an ArrayValue of scalars; 1 = needs the Python renderer, -1 = error. */
static int put_array_json(buf_t *b, const uint8_t *p, size_t n) {
    rd_t r = {p, p + n};
    fld_t f;
    int rc, first = 1;
    size_t start = b->len;
    if (buf_put(b, "[", 1)) return -1;
    while ((rc = rd_field(&r, &f)) == 1) {
        if (f.field != 1 || f.wt != 2) continue;
        anyval_t v;
        if (parse_anyvalue(f.ptr, f.len, &v)) return -1;
        if (!first && buf_put(b, ",", 1)) return -1;
        first = 0;
        switch (v.kind) {
        case AV_NONE: if (buf_put(b, "null", 4)) return -1; break;
        case AV_STRING: if (put_json_string(b, v.ptr, v.len)) return -1; break;
        case AV_BOOL: if (buf_put(b, v.u ? "true" : "false", v.u ? 4 : 5)) return -1; break;
        case AV_INT: if (put_int(b, (int64_t)v.u)) return -1; break;
        case AV_DOUBLE: {
            double x;
            memcpy(&x, &v.u, 8);
            if (!isfinite(x)) { b->len = start; return 1; }
            if (put_double_repr(b, x, 1) < 0) return -1;
            break;
        }
        case AV_BYTES:
            if (buf_put(b, "\"", 1) || put_base64(b, v.ptr, v.len) || buf_put(b, "\"", 1)) return -1;
            break;
        default: b->len = start; return 1; /* nested array / kvlist */
        }
    }
    if (rc < 0) return -1;
    return buf_put(b, "]", 1);
}

/* Render an AnyValue into c->data (not yet terminated); 1 = fixup needed. */
static int render_value(buf_t *b, const uint8_t *p, size_t n) {
    anyval_t v;
    if (parse_anyvalue(p, n, &v)) return -1;
    switch (v.kind) {
    case AV_NONE: return 0;
    case AV_STRING: return buf_put(b, v.ptr, v.len);
    case AV_BOOL: return buf_put(b, v.u ? "true" : "false", v.u ? 4 : 5);
    case AV_INT: return put_int(b, (int64_t)v.u);
    case AV_BYTES: return put_base64(b, v.ptr, v.len);
    case AV_DOUBLE: {
        double x;
        memcpy(&x, &v.u, 8);
        if (isnan(x)) return buf_put(b, "NaN", 3);
        if (isinf(x)) return buf_put(b, x > 0 ? "+Inf" : "-Inf", 4);
        size_t start = b->len;
        int rc = put_double_repr(b, x, 0);
        if (rc == 1) { b->len = start; return 1; }
        return rc;
    }
    case AV_ARRAY: return put_array_json(b, v.ptr, v.len);
    default: return 1;
    }
}

/* ------------------------------------------------------------------ attributes */

typedef struct {
    const uint8_t *key, *val;
    size_t klen, vlen;
    int live;
} kv_t;

typedef struct {
    kv_t *items;
    size_t n, cap;
    int32_t *table;  /* hash slots for large lists */
    size_t tcap;
} kvlist_t;

static int kv_push(kvlist_t *l, const uint8_t *p, size_t n) {
    if (grow((void **)&l->items, &l->cap, l->n, sizeof(kv_t), 32)) return -1;
    kv_t *kv = &l->items[l->n];
    kv->key = kv->val = NULL;
    kv->klen = kv->vlen = 0;
    kv->live = 1;
    rd_t r = {p, p + n};
    fld_t f;
    int rc;
    while ((rc = rd_field(&r, &f)) == 1) {
        if (f.wt != 2) continue;
        if (f.field == 1) { kv->key = f.ptr; kv->klen = f.len; }
        else if (f.field == 2) { kv->val = f.ptr; kv->vlen = f.len; }
    }
    if (rc < 0) return -1;
    if (kv->key == NULL) kv->key = (const uint8_t *)"";
    if (check_utf8(kv->key, kv->klen)) return -1;
    l->n++;
    return 0;
}

static uint64_t fnv1a(const uint8_t *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 1099511628211ULL; }
    return h;
}

/* Duplicate keys: the last value wins, kept at the first occurrence's position. */
static int kv_dedup(kvlist_t *l) {
    if (l->n < 2) return 0;
    if (l->n <= 16) {
        for (size_t i = 1; i < l->n; i++)
            for (size_t j = 0; j < i; j++)
                if (l->items[j].live && l->items[j].klen == l->items[i].klen &&
                    memcmp(l->items[j].key, l->items[i].key, l->items[i].klen) == 0) {
                    l->items[j].val = l->items[i].val;
                    l->items[j].vlen = l->items[i].vlen;
                    l->items[i].live = 0;
                    break;
                }
        return 0;
    }
    size_t cap = 64;
    while (cap < 2 * l->n) cap *= 2;
    if (cap > l->tcap) {
        int32_t *t = realloc(l->table, cap * sizeof(int32_t));
        if (!t) { PyErr_NoMemory(); return -1; }
        l->table = t;
        l->tcap = cap;
    }
    for (size_t i = 0; i < cap; i++) l->table[i] = -1;
    for (size_t i = 0; i < l->n; i++) {
        kv_t *kv = &l->items[i];
        size_t s = fnv1a(kv->key, kv->klen) & (cap - 1);
        while (l->table[s] >= 0) {
            kv_t *o = &l->items[l->table[s]];
            if (o->klen == kv->klen && memcmp(o->key, kv->key, kv->klen) == 0) {
                o->val = kv->val;
                o->vlen = kv->vlen;
                kv->live = 0;
                break;
            }
            s = (s + 1) & (cap - 1);
        }
        if (kv->live) l->table[s] = (int32_t)i;
    }
    return 0;
}

typedef struct {
    PyObject *fixups; /* list of (map_id, value_index, raw AnyValue bytes) */
} ctx_t;

/* Emit one owner's attributes into a map column and close the owner. */
static int emit_map(ctx_t *ctx, int map_id, mapcol_t *m, kvlist_t *l) {
    if (kv_dedup(l)) return -1;
    for (size_t i = 0; i < l->n; i++) {
        kv_t *kv = &l->items[i];
        if (!kv->live) continue;
        if (col_push(&m->keys, (const char *)kv->key, kv->klen)) return -1;
        size_t start = m->vals.data.len;
        int rc = kv->val ? render_value(&m->vals.data, kv->val, kv->vlen) : 0;
        if (rc < 0) return -1;
        if (rc == 1) {
            m->vals.data.len = start;
            PyObject *t = Py_BuildValue("(iiy#)", map_id, m->vals.n, (const char *)kv->val,
                                        (Py_ssize_t)kv->vlen);
            if (!t || PyList_Append(ctx->fixups, t)) { Py_XDECREF(t); return -1; }
            Py_DECREF(t);
        }
        if (col_end_value(&m->vals)) return -1;
    }
    l->n = 0;
    return buf_i32(&m->offs, m->keys.n);
}

/* ------------------------------------------------------------------ the batch */

typedef struct {
    int32_t n_spans, rejected;
    buf_t span_res, span_scope;         /* int32 per span */
    strcol_t services, scope_names, scope_versions;
    mapcol_t res_attrs;
    strcol_t trace_ids, span_ids, parent_ids, trace_states, names, status_messages;
    buf_t kinds, status_codes;          /* uint8 per span */
    buf_t starts, durations;            /* int64 / uint64 per span */
    mapcol_t attrs;
    buf_t ev_offs, ev_times;            /* int32 per span (+1), int64 per event */
    strcol_t ev_names;
    mapcol_t ev_attrs;
    buf_t link_offs;
    strcol_t link_trace_ids, link_span_ids, link_states;
    mapcol_t link_attrs;
    int32_t n_events, n_links;
    kvlist_t kvs;
    ctx_t ctx;
} batch_t;

typedef struct {
    const uint8_t *ptr;
    size_t len;
} slice_t;

typedef struct {
    slice_t *items;
    size_t n, cap;
} slices_t;

static int slices_push(slices_t *s, const uint8_t *p, size_t n) {
    if (grow((void **)&s->items, &s->cap, s->n, sizeof(slice_t), 16)) return -1;
    s->items[s->n].ptr = p;
    s->items[s->n].len = n;
    s->n++;
    return 0;
}

/* Collect the KeyValues of repeated field `field` of a message into b->kvs. */
static int collect_attrs(batch_t *b, const uint8_t *p, size_t n, uint32_t field) {
    rd_t r = {p, p + n};
    fld_t f;
    int rc;
    while ((rc = rd_field(&r, &f)) == 1)
        if (f.field == field && f.wt == 2 && kv_push(&b->kvs, f.ptr, f.len)) return -1;
    return rc < 0 ? -1 : 0;
}

static int parse_event(batch_t *b, const uint8_t *p, size_t n) {
    rd_t r = {p, p + n};
    fld_t f;
    int rc;
    uint64_t t = 0;
    const uint8_t *name = (const uint8_t *)"";
    size_t name_len = 0;
    while ((rc = rd_field(&r, &f)) == 1) {
        if (f.field == 1 && f.wt == 1) t = f.u;
        else if (f.field == 2 && f.wt == 2) { name = f.ptr; name_len = f.len; }
        else if (f.field == 3 && f.wt == 2 && kv_push(&b->kvs, f.ptr, f.len)) return -1;
    }
    if (rc < 0 || check_utf8(name, name_len)) return -1;
    if (buf_u64(&b->ev_times, t) || col_push(&b->ev_names, (const char *)name, name_len)) return -1;
    b->n_events++;
    return emit_map(&b->ctx, 2, &b->ev_attrs, &b->kvs);
}

static int parse_link(batch_t *b, const uint8_t *p, size_t n) {
    rd_t r = {p, p + n};
    fld_t f;
    int rc;
    slice_t tid = {(const uint8_t *)"", 0}, sid = {(const uint8_t *)"", 0}, st = {(const uint8_t *)"", 0};
    while ((rc = rd_field(&r, &f)) == 1) {
        if (f.wt != 2) continue;
        if (f.field == 1) { tid.ptr = f.ptr; tid.len = f.len; }
        else if (f.field == 2) { sid.ptr = f.ptr; sid.len = f.len; }
        else if (f.field == 3) { st.ptr = f.ptr; st.len = f.len; }
        else if (f.field == 4 && kv_push(&b->kvs, f.ptr, f.len)) return -1;
    }
    if (rc < 0 || check_utf8(st.ptr, st.len)) return -1;
    if (put_hex(&b->link_trace_ids.data, tid.ptr, tid.len) || col_end_value(&b->link_trace_ids)) return -1;
    if (put_hex(&b->link_span_ids.data, sid.ptr, sid.len) || col_end_value(&b->link_span_ids)) return -1;
    if (col_push(&b->link_states, (const char *)st.ptr, st.len)) return -1;
    b->n_links++;
    return emit_map(&b->ctx, 3, &b->link_attrs, &b->kvs);
}

static int parse_span(batch_t *b, const uint8_t *p, size_t n, int32_t res_i, int32_t scope_i,
                      slices_t *events, slices_t *links) {
    rd_t r = {p, p + n};
    fld_t f;
    int rc;
    slice_t tid = {(const uint8_t *)"", 0}, sid = {(const uint8_t *)"", 0}, pid = {(const uint8_t *)"", 0};
    slice_t state = {(const uint8_t *)"", 0}, name = {(const uint8_t *)"", 0}, msg = {(const uint8_t *)"", 0};
    uint64_t kind = 0, start = 0, end = 0, code = 0;
    events->n = links->n = 0;
    b->kvs.n = 0;
    while ((rc = rd_field(&r, &f)) == 1) {
        switch (f.field) {
        case 1: if (f.wt == 2) { tid.ptr = f.ptr; tid.len = f.len; } break;
        case 2: if (f.wt == 2) { sid.ptr = f.ptr; sid.len = f.len; } break;
        case 3: if (f.wt == 2) { state.ptr = f.ptr; state.len = f.len; } break;
        case 4: if (f.wt == 2) { pid.ptr = f.ptr; pid.len = f.len; } break;
        case 5: if (f.wt == 2) { name.ptr = f.ptr; name.len = f.len; } break;
        case 6: if (f.wt == 0) kind = f.u; break;
        case 7: if (f.wt == 1) start = f.u; break;
        case 8: if (f.wt == 1) end = f.u; break;
        case 9: if (f.wt == 2 && kv_push(&b->kvs, f.ptr, f.len)) return -1; break;
        case 11: if (f.wt == 2 && slices_push(events, f.ptr, f.len)) return -1; break;
        case 13: if (f.wt == 2 && slices_push(links, f.ptr, f.len)) return -1; break;
        case 15:
            if (f.wt == 2) {
                rd_t sr = {f.ptr, f.ptr + f.len};
                fld_t sf;
                int src;
                while ((src = rd_field(&sr, &sf)) == 1) {
                    if (sf.field == 2 && sf.wt == 2) { msg.ptr = sf.ptr; msg.len = sf.len; }
                    else if (sf.field == 3 && sf.wt == 0) code = sf.u;
                }
                if (src < 0) return -1;
            }
            break;
        default: break;
        }
    }
    if (rc < 0) return -1;
    if (tid.len != 16 || sid.len != 8 || (pid.len != 0 && pid.len != 8)) {
        b->rejected++;
        b->kvs.n = 0;
        return 0;
    }
    if (check_utf8(state.ptr, state.len) || check_utf8(name.ptr, name.len) ||
        check_utf8(msg.ptr, msg.len))
        return -1;
    if (buf_i32(&b->span_res, res_i) || buf_i32(&b->span_scope, scope_i)) return -1;
    if (put_hex(&b->trace_ids.data, tid.ptr, 16) || col_end_value(&b->trace_ids)) return -1;
    if (put_hex(&b->span_ids.data, sid.ptr, 8) || col_end_value(&b->span_ids)) return -1;
    if (put_hex(&b->parent_ids.data, pid.ptr, pid.len) || col_end_value(&b->parent_ids)) return -1;
    if (col_push(&b->trace_states, (const char *)state.ptr, state.len)) return -1;
    if (col_push(&b->names, (const char *)name.ptr, name.len)) return -1;
    int32_t k = (int32_t)(uint32_t)kind, c = (int32_t)(uint32_t)code;
    if (buf_u8(&b->kinds, (uint8_t)((k >= 0 && k <= 5) ? k : 0))) return -1;
    if (buf_u8(&b->status_codes, (uint8_t)((c >= 0 && c <= 2) ? c : 0))) return -1;
    if (col_push(&b->status_messages, (const char *)msg.ptr, msg.len)) return -1;
    if (buf_u64(&b->starts, start) || buf_u64(&b->durations, end >= start ? end - start : 0)) return -1;
    if (emit_map(&b->ctx, 1, &b->attrs, &b->kvs)) return -1;
    for (size_t i = 0; i < events->n; i++)
        if (parse_event(b, events->items[i].ptr, events->items[i].len)) return -1;
    if (buf_i32(&b->ev_offs, b->n_events)) return -1;
    for (size_t i = 0; i < links->n; i++)
        if (parse_link(b, links->items[i].ptr, links->items[i].len)) return -1;
    if (buf_i32(&b->link_offs, b->n_links)) return -1;
    b->n_spans++;
    return 0;
}

static int parse_resource_spans(batch_t *b, const uint8_t *p, size_t n, int32_t res_i,
                                slices_t *scopes, slices_t *events, slices_t *links) {
    rd_t r = {p, p + n};
    fld_t f;
    int rc;
    scopes->n = 0;
    b->kvs.n = 0;
    while ((rc = rd_field(&r, &f)) == 1) {
        if (f.wt != 2) continue;
        if (f.field == 1 && collect_attrs(b, f.ptr, f.len, 1)) return -1;
        if (f.field == 2 && slices_push(scopes, f.ptr, f.len)) return -1;
    }
    if (rc < 0) return -1;
    /* service.name: the surviving (last) value among the resource attributes */
    if (kv_dedup(&b->kvs)) return -1;
    size_t service_start = b->services.data.len;
    for (size_t i = 0; i < b->kvs.n; i++) {
        kv_t *kv = &b->kvs.items[i];
        if (kv->live && kv->klen == 12 && memcmp(kv->key, "service.name", 12) == 0 && kv->val) {
            b->services.data.len = service_start;
            int vr = render_value(&b->services.data, kv->val, kv->vlen);
            if (vr < 0) return -1;
            if (vr == 1) b->services.data.len = service_start;
        }
    }
    if (col_end_value(&b->services)) return -1;
    if (emit_map(&b->ctx, 0, &b->res_attrs, &b->kvs)) return -1;

    for (size_t s = 0; s < scopes->n; s++) {
        rd_t sr = {scopes->items[s].ptr, scopes->items[s].ptr + scopes->items[s].len};
        slice_t name = {(const uint8_t *)"", 0}, version = {(const uint8_t *)"", 0};
        /* first pass: the scope; spans are parsed in a second pass over the same bytes */
        while ((rc = rd_field(&sr, &f)) == 1) {
            if (f.field == 1 && f.wt == 2) {
                rd_t ir = {f.ptr, f.ptr + f.len};
                fld_t inf;
                int irc;
                while ((irc = rd_field(&ir, &inf)) == 1) {
                    if (inf.wt != 2) continue;
                    if (inf.field == 1) { name.ptr = inf.ptr; name.len = inf.len; }
                    else if (inf.field == 2) { version.ptr = inf.ptr; version.len = inf.len; }
                }
                if (irc < 0) return -1;
            }
        }
        if (rc < 0 || check_utf8(name.ptr, name.len) || check_utf8(version.ptr, version.len)) return -1;
        int32_t scope_i = b->scope_names.n;
        if (col_push(&b->scope_names, (const char *)name.ptr, name.len)) return -1;
        if (col_push(&b->scope_versions, (const char *)version.ptr, version.len)) return -1;
        sr.p = scopes->items[s].ptr;
        while ((rc = rd_field(&sr, &f)) == 1)
            if (f.field == 2 && f.wt == 2 &&
                parse_span(b, f.ptr, f.len, res_i, scope_i, events, links))
                return -1;
        if (rc < 0) return -1;
    }
    return 0;
}

static void batch_free(batch_t *b) {
    buf_free(&b->span_res); buf_free(&b->span_scope);
    col_free(&b->services); col_free(&b->scope_names); col_free(&b->scope_versions);
    map_free(&b->res_attrs);
    col_free(&b->trace_ids); col_free(&b->span_ids); col_free(&b->parent_ids);
    col_free(&b->trace_states); col_free(&b->names); col_free(&b->status_messages);
    buf_free(&b->kinds); buf_free(&b->status_codes); buf_free(&b->starts); buf_free(&b->durations);
    map_free(&b->attrs);
    buf_free(&b->ev_offs); buf_free(&b->ev_times); col_free(&b->ev_names); map_free(&b->ev_attrs);
    buf_free(&b->link_offs); col_free(&b->link_trace_ids); col_free(&b->link_span_ids);
    col_free(&b->link_states); map_free(&b->link_attrs);
    free(b->kvs.items); free(b->kvs.table);
    Py_XDECREF(b->ctx.fixups);
}

static int batch_init(batch_t *b) {
    memset(b, 0, sizeof *b);
    b->ctx.fixups = PyList_New(0);
    if (!b->ctx.fixups) return -1;
    if (col_init(&b->services) || col_init(&b->scope_names) || col_init(&b->scope_versions)) return -1;
    if (map_init(&b->res_attrs) || map_init(&b->attrs) || map_init(&b->ev_attrs) || map_init(&b->link_attrs)) return -1;
    if (col_init(&b->trace_ids) || col_init(&b->span_ids) || col_init(&b->parent_ids)) return -1;
    if (col_init(&b->trace_states) || col_init(&b->names) || col_init(&b->status_messages)) return -1;
    if (col_init(&b->ev_names) || col_init(&b->link_trace_ids) || col_init(&b->link_span_ids) ||
        col_init(&b->link_states))
        return -1;
    if (buf_i32(&b->ev_offs, 0) || buf_i32(&b->link_offs, 0)) return -1;
    return 0;
}

#define STR(c) buf_bytes(&(c).offs), buf_bytes(&(c).data)
#define MAP(m) buf_bytes(&(m).offs), STR((m).keys), STR((m).vals)

static PyObject *decode(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE)) return NULL;
    batch_t b;
    slices_t scopes = {0}, events = {0}, links = {0};
    PyObject *result = NULL;
    if (batch_init(&b)) goto done;
    {
        rd_t r = {(const uint8_t *)view.buf, (const uint8_t *)view.buf + view.len};
        fld_t f;
        int rc;
        int32_t res_i = 0;
        while ((rc = rd_field(&r, &f)) == 1) {
            if (f.field != 1 || f.wt != 2) continue;
            if (parse_resource_spans(&b, f.ptr, f.len, res_i, &scopes, &events, &links)) goto done;
            res_i++;
        }
        if (rc < 0) goto done;
    }
    result = Py_BuildValue(
        "{s:i,s:i,s:N,s:N,s:(NN),s:(NNNNN),s:(NN),s:(NN),s:(NN),s:(NN),s:(NN),s:(NN),s:(NN),"
        "s:N,s:N,s:(NN),s:N,s:N,s:(NNNNN),s:N,s:N,s:(NN),s:(NNNNN),s:N,s:(NN),s:(NN),s:(NN),"
        "s:(NNNNN),s:O}",
        "n_spans", b.n_spans, "rejected", b.rejected,
        "span_res", buf_bytes(&b.span_res), "span_scope", buf_bytes(&b.span_scope),
        "services", STR(b.services), "res_attrs", MAP(b.res_attrs),
        "scope_names", STR(b.scope_names), "scope_versions", STR(b.scope_versions),
        "trace_ids", STR(b.trace_ids), "span_ids", STR(b.span_ids), "parent_ids", STR(b.parent_ids),
        "trace_states", STR(b.trace_states), "names", STR(b.names),
        "kinds", buf_bytes(&b.kinds), "status_codes", buf_bytes(&b.status_codes),
        "status_messages", STR(b.status_messages),
        "starts", buf_bytes(&b.starts), "durations", buf_bytes(&b.durations),
        "attrs", MAP(b.attrs),
        "ev_offs", buf_bytes(&b.ev_offs), "ev_times", buf_bytes(&b.ev_times),
        "ev_names", STR(b.ev_names), "ev_attrs", MAP(b.ev_attrs),
        "link_offs", buf_bytes(&b.link_offs), "link_trace_ids", STR(b.link_trace_ids),
        "link_span_ids", STR(b.link_span_ids), "link_states", STR(b.link_states),
        "link_attrs", MAP(b.link_attrs), "fixups", b.ctx.fixups);
done:
    batch_free(&b);
    free(scopes.items); free(events.items); free(links.items);
    PyBuffer_Release(&view);
    return result;
}

/* ------------------------------------------------------------------ map rebuild
 *
 * merge_map: a SpanAttributes map column rebuilt with entries added (and some removed), in one
 * pass of memcpy over the old entries, for SpanBatch._rebuilt_attributes. Arrow's way
 * (concatenate the chunks, then take in row order) copies every attribute byte twice.
 * Strings are (int32 offsets, data, array offset, length) as pyarrow holds them; the caller
 * sized the five output buffers exactly; every copy is bounds-checked against them.
 */

typedef struct {
    Py_buffer offs, data;
    const int32_t *off; /* at the array's offset */
    const char *bytes;
    Py_ssize_t n;
    int held;
} sview_t;

static void sview_release(sview_t *v) {
    if (v->held) { PyBuffer_Release(&v->offs); PyBuffer_Release(&v->data); v->held = 0; }
}

static int sview_get(PyObject *spec, sview_t *v) {
    PyObject *offs, *data;
    Py_ssize_t offset, n;
    if (!PyArg_ParseTuple(spec, "OOnn", &offs, &data, &offset, &n)) return -1;
    if (PyObject_GetBuffer(offs, &v->offs, PyBUF_SIMPLE)) return -1;
    if (PyObject_GetBuffer(data, &v->data, PyBUF_SIMPLE)) { PyBuffer_Release(&v->offs); return -1; }
    v->held = 1;
    if (offset < 0 || n < 0 || (offset + n + 1) * 4 > v->offs.len) {
        PyErr_SetString(PyExc_ValueError, "string array: offsets buffer too short");
        return -1;
    }
    v->off = (const int32_t *)v->offs.buf + offset;
    v->bytes = (const char *)v->data.buf;
    v->n = n;
    if (n && (v->off[0] < 0 || v->off[n] > v->data.len || v->off[0] > v->off[n])) {
        PyErr_SetString(PyExc_ValueError, "string array: offsets outside the data buffer");
        return -1;
    }
    return 0;
}

typedef struct {
    int32_t *off;
    char *data;
    Py_ssize_t n_cap, data_cap, n, len;
} sout_t;

/* Appends strings [first, last) of v (contiguous) to o. */
static int sout_run(sout_t *o, const sview_t *v, Py_ssize_t first, Py_ssize_t last) {
    if (first >= last) return 0;
    int32_t a = v->off[first], b = v->off[last];
    Py_ssize_t count = last - first;
    if (b < a || o->n + count > o->n_cap || o->len + (b - a) > o->data_cap) {
        PyErr_SetString(PyExc_ValueError, "merge_map: output buffers too small");
        return -1;
    }
    memcpy(o->data + o->len, v->bytes + a, (size_t)(b - a));
    int32_t shift = (int32_t)o->len - a;
    for (Py_ssize_t i = 0; i < count; i++) {
        int32_t end = v->off[first + i + 1];
        if (end < v->off[first + i]) { PyErr_SetString(PyExc_ValueError, "merge_map: offsets decrease"); return -1; }
        o->off[o->n + 1 + i] = end + shift;
    }
    o->n += count;
    o->len += b - a;
    return 0;
}

static PyObject *merge_map(PyObject *self, PyObject *args) {
    Py_ssize_t n_rows;
    PyObject *old_start_o, *keep_o, *keys_o, *val_chunks_o, *new_start_o, *new_keys_o, *new_vals_o, *out_o;
    if (!PyArg_ParseTuple(args, "nOOOOOOOO", &n_rows, &old_start_o, &keep_o, &keys_o, &val_chunks_o,
                          &new_start_o, &new_keys_o, &new_vals_o, &out_o))
        return NULL;
    Py_buffer old_start = {0}, new_start = {0}, keep = {0}, outs[5];
    int have[5] = {0}, have_old = 0, have_new = 0, have_keep = 0;
    sview_t keys = {0}, new_keys = {0}, new_vals = {0};
    sview_t *chunks = NULL;
    Py_ssize_t n_chunks = 0, *chunk_end = NULL;
    PyObject *result = NULL;

    if (!PyList_Check(val_chunks_o) || !PyTuple_Check(out_o) || PyTuple_GET_SIZE(out_o) != 5) {
        PyErr_SetString(PyExc_TypeError, "merge_map: values must be a list, out a 5-tuple");
        return NULL;
    }
    if (PyObject_GetBuffer(old_start_o, &old_start, PyBUF_SIMPLE)) goto done;
    have_old = 1;
    if (PyObject_GetBuffer(new_start_o, &new_start, PyBUF_SIMPLE)) goto done;
    have_new = 1;
    if (old_start.len != (n_rows + 1) * 8 || new_start.len != (n_rows + 1) * 8) {
        PyErr_SetString(PyExc_ValueError, "merge_map: row ranges must be n_rows + 1 int64");
        goto done;
    }
    if (keep_o != Py_None) {
        if (PyObject_GetBuffer(keep_o, &keep, PyBUF_SIMPLE)) goto done;
        have_keep = 1;
    }
    if (sview_get(keys_o, &keys) || sview_get(new_keys_o, &new_keys) || sview_get(new_vals_o, &new_vals)) goto done;
    if (new_keys.n != new_vals.n || (have_keep && keep.len != keys.n)) {
        PyErr_SetString(PyExc_ValueError, "merge_map: keys, values and keep must be as long");
        goto done;
    }
    n_chunks = PyList_GET_SIZE(val_chunks_o);
    chunks = calloc((size_t)(n_chunks ? n_chunks : 1), sizeof(sview_t));
    chunk_end = calloc((size_t)(n_chunks ? n_chunks : 1), sizeof(Py_ssize_t));
    if (!chunks || !chunk_end) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t c = 0; c < n_chunks; c++) {
        if (sview_get(PyList_GET_ITEM(val_chunks_o, c), &chunks[c])) goto done;
        chunk_end[c] = (c ? chunk_end[c - 1] : 0) + chunks[c].n;
    }
    if ((n_chunks ? chunk_end[n_chunks - 1] : 0) != keys.n) {
        PyErr_SetString(PyExc_ValueError, "merge_map: as many values as keys are needed");
        goto done;
    }
    for (int i = 0; i < 5; i++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(out_o, i), &outs[i], PyBUF_WRITABLE)) goto done;
        have[i] = 1;
    }
    {
        const int64_t *os = old_start.buf, *ns = new_start.buf;
        const uint8_t *kp = have_keep ? keep.buf : NULL;
        int32_t *map_off = outs[0].buf;
        if (outs[0].len < (n_rows + 1) * 4 || outs[1].len < 4 || outs[3].len < 4) {
            PyErr_SetString(PyExc_ValueError, "merge_map: output buffers too small");
            goto done;
        }
        sout_t ok = {outs[1].buf, outs[2].buf, outs[1].len / 4 - 1, outs[2].len, 0, 0};
        sout_t ov = {outs[3].buf, outs[4].buf, outs[3].len / 4 - 1, outs[4].len, 0, 0};
        ok.off[0] = ov.off[0] = 0;
        Py_ssize_t c = 0, c_start = 0;
        if (os[0] != 0 || ns[0] != 0 || os[n_rows] != keys.n || ns[n_rows] != new_keys.n) {
            PyErr_SetString(PyExc_ValueError, "merge_map: row ranges do not cover the entries");
            goto done;
        }
        for (Py_ssize_t r = 0; r < n_rows; r++) {
            map_off[r] = (int32_t)ok.n;
            Py_ssize_t a = os[r], b = os[r + 1];
            if (b < a || ns[r + 1] < ns[r]) { PyErr_SetString(PyExc_ValueError, "merge_map: row ranges decrease"); goto done; }
            while (a < b) {  /* old entries, in runs within one values chunk and kept */
                while (c < n_chunks && a >= chunk_end[c]) { c_start = chunk_end[c]; c++; }
                if (c >= n_chunks) { PyErr_SetString(PyExc_ValueError, "merge_map: entry past the values"); goto done; }
                Py_ssize_t stop = b < chunk_end[c] ? b : chunk_end[c];
                if (kp) {
                    while (a < stop && !kp[a]) a++;
                    Py_ssize_t run = a;
                    while (run < stop && kp[run]) run++;
                    stop = run;
                }
                if (a >= stop) continue;
                if (sout_run(&ok, &keys, a, stop) || sout_run(&ov, &chunks[c], a - c_start, stop - c_start)) goto done;
                a = stop;
            }
            if (sout_run(&ok, &new_keys, ns[r], ns[r + 1]) || sout_run(&ov, &new_vals, ns[r], ns[r + 1])) goto done;
        }
        map_off[n_rows] = (int32_t)ok.n;
        result = Py_BuildValue("nnn", ok.n, ok.len, ov.len);
    }
done:
    for (int i = 0; i < 5; i++) if (have[i]) PyBuffer_Release(&outs[i]);
    if (have_old) PyBuffer_Release(&old_start);
    if (have_new) PyBuffer_Release(&new_start);
    if (have_keep) PyBuffer_Release(&keep);
    sview_release(&keys); sview_release(&new_keys); sview_release(&new_vals);
    for (Py_ssize_t i = 0; i < n_chunks && chunks; i++) sview_release(&chunks[i]);
    free(chunks); free(chunk_end);
    return result;
}

/* ------------------------------------------------------------------ key codes
 *
 * key_codes: every string of an array as an index into its distinct values, in order of first
 * appearance (Arrow's dictionary_encode, for SpanBatch._key_codes: a batch's ~12 attribute
 * entries per span carry a few dozen distinct keys). Spans of one kind list their keys in the
 * same order, so each entry is first compared with the key that followed the previous entry's
 * key last time (one memcmp: ~4 ns an entry, vs ~17 for Arrow's hashing); on a miss, open
 * addressing on a 64-bit hash, the table doubled at half load, so hostile input with a distinct
 * key per entry stays linear.
 */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xC2B2AE3D27D4EB4FULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ (w * 0xBF58476D1CE4E5B9ULL)) * 0x94D049BB133111EBULL;
        h ^= h >> 29;
        s += 8; n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ (w * 0xBF58476D1CE4E5B9ULL)) * 0x94D049BB133111EBULL;
    return h ^ (h >> 31);
}

typedef struct { uint64_t hash; int32_t first; int32_t code; } kslot_t;

static PyObject *key_codes(PyObject *self, PyObject *args) {
    PyObject *spec, *codes_o, *distinct = NULL, *result = NULL;
    if (!PyArg_ParseTuple(args, "OO", &spec, &codes_o)) return NULL;
    sview_t v = {0};
    Py_buffer out = {0};
    int have_out = 0;
    kslot_t *table = NULL;
    int32_t *firsts = NULL, *next_of = NULL;  /* per distinct value: its first entry, the value after it last time */
    size_t cap = 64, used = 0;
    if (sview_get(spec, &v)) goto done;
    if (PyObject_GetBuffer(codes_o, &out, PyBUF_WRITABLE)) goto done;
    have_out = 1;
    if (out.len < v.n * 4 || v.n > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "key_codes: codes buffer too small");
        goto done;
    }
    table = malloc(cap * sizeof(kslot_t));
    firsts = malloc(cap / 2 * sizeof(int32_t));
    next_of = malloc(cap / 2 * sizeof(int32_t));
    if (!table || !firsts || !next_of) { PyErr_NoMemory(); goto done; }
    for (size_t i = 0; i < cap; i++) table[i].first = -1;
    int32_t *codes = out.buf, prev = -1;
    for (Py_ssize_t i = 0; i < v.n; i++) {
        int32_t a = v.off[i], b = v.off[i + 1];
        if (b < a || b > v.off[v.n]) { PyErr_SetString(PyExc_ValueError, "key_codes: offsets decrease"); goto done; }
        const char *s = v.bytes + a;
        size_t len = (size_t)(b - a);
        if (prev >= 0 && next_of[prev] >= 0) {  /* the predicted key */
            int32_t guess = next_of[prev], ga = v.off[firsts[guess]];
            if ((size_t)(v.off[firsts[guess] + 1] - ga) == len && memcmp(v.bytes + ga, s, len) == 0) {
                codes[i] = prev = guess;
                continue;
            }
        }
        uint64_t h = hash_bytes(s, len);
        size_t slot = (size_t)h & (cap - 1);
        for (;;) {
            kslot_t *k = &table[slot];
            if (k->first < 0) {  /* a new distinct value */
                if ((used + 1) * 2 > cap) {  /* grow: rehash into a table twice the size */
                    size_t ncap = cap * 2;
                    kslot_t *nt = malloc(ncap * sizeof(kslot_t));
                    int32_t *nf = realloc(firsts, ncap / 2 * sizeof(int32_t));
                    if (nf) firsts = nf;
                    int32_t *nn = nf ? realloc(next_of, ncap / 2 * sizeof(int32_t)) : NULL;
                    if (nn) next_of = nn;
                    if (!nt || !nf || !nn) { free(nt); PyErr_NoMemory(); goto done; }
                    for (size_t j = 0; j < ncap; j++) nt[j].first = -1;
                    for (size_t j = 0; j < cap; j++) {
                        if (table[j].first < 0) continue;
                        size_t q = (size_t)table[j].hash & (ncap - 1);
                        while (nt[q].first >= 0) q = (q + 1) & (ncap - 1);
                        nt[q] = table[j];
                    }
                    free(table);
                    table = nt;
                    cap = ncap;
                    slot = (size_t)h & (cap - 1);
                    continue;  /* probe again in the new table */
                }
                k->hash = h; k->first = (int32_t)i; k->code = (int32_t)used;
                next_of[used] = -1;
                firsts[used++] = (int32_t)i;
                break;
            }
            if (k->hash == h) {
                int32_t fa = v.off[k->first];
                if ((size_t)(v.off[k->first + 1] - fa) == len && memcmp(v.bytes + fa, s, len) == 0) break;
            }
            slot = (slot + 1) & (cap - 1);
        }
        codes[i] = table[slot].code;
        if (prev >= 0) next_of[prev] = codes[i];
        prev = codes[i];
    }
    distinct = PyList_New((Py_ssize_t)used);
    if (!distinct) goto done;
    for (size_t j = 0; j < used; j++) {
        int32_t a = v.off[firsts[j]], b = v.off[firsts[j] + 1];
        PyObject *str = PyUnicode_DecodeUTF8(v.bytes + a, b - a, "strict");
        if (!str) goto done;
        PyList_SET_ITEM(distinct, (Py_ssize_t)j, str);
    }
    result = distinct;
    distinct = NULL;
done:
    Py_XDECREF(distinct);
    if (have_out) PyBuffer_Release(&out);
    sview_release(&v);
    free(table); free(firsts); free(next_of);
    return result;
}

/* ------------------------------------------------------------------ gather
 *
 * take_strings: a string array whose i-th value is entry index[i] of the chunked string array
 * `chunks` (indices across the chunks, -1 for null), in one call: Arrow's take on a ChunkedArray
 * concatenates every chunk first, and taking chunk by chunk costs a kernel call per chunk. For
 * SpanBatch.attribute_columns (a processor reading a few attributes of thousands of spans).
 */

/* The chunk holding entry e (0 <= e < the last chunk_end): c itself when it does, else a binary search. */
static Py_ssize_t chunk_of(const Py_ssize_t *chunk_end, Py_ssize_t n_chunks, int64_t e, Py_ssize_t c) {
    if (e < chunk_end[c] && (c == 0 || e >= chunk_end[c - 1])) return c;
    Py_ssize_t lo = 0, hi = n_chunks - 1;
    while (lo < hi) { Py_ssize_t mid = (lo + hi) / 2; if (chunk_end[mid] > e) hi = mid; else lo = mid + 1; }
    return lo;
}

static PyObject *take_strings(PyObject *self, PyObject *args) {
    PyObject *chunks_o, *index_o, *offs_o = NULL, *data_o = NULL, *valid_o = NULL, *result = NULL;
    if (!PyArg_ParseTuple(args, "OO", &chunks_o, &index_o)) return NULL;
    if (!PyList_Check(chunks_o)) { PyErr_SetString(PyExc_TypeError, "take_strings: chunks must be a list"); return NULL; }
    Py_buffer index = {0};
    int have_index = 0;
    Py_ssize_t n_chunks = PyList_GET_SIZE(chunks_o), total = 0;
    sview_t *chunks = calloc((size_t)(n_chunks ? n_chunks : 1), sizeof(sview_t));
    Py_ssize_t *chunk_end = calloc((size_t)(n_chunks ? n_chunks : 1), sizeof(Py_ssize_t));
    if (!chunks || !chunk_end) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t c = 0; c < n_chunks; c++) {
        if (sview_get(PyList_GET_ITEM(chunks_o, c), &chunks[c])) goto done;
        total += chunks[c].n;
        chunk_end[c] = total;
    }
    if (PyObject_GetBuffer(index_o, &index, PyBUF_SIMPLE)) goto done;
    have_index = 1;
    if (index.len % 8) { PyErr_SetString(PyExc_ValueError, "take_strings: index must be int64"); goto done; }
    const int64_t *idx = index.buf;
    Py_ssize_t n = index.len / 8, bytes = 0, nulls = 0;
    /* pass 1: check every index, size the output */
    for (Py_ssize_t i = 0, c = 0; i < n; i++) {
        int64_t e = idx[i];
        if (e < 0) { nulls++; continue; }
        if (e >= total) { PyErr_SetString(PyExc_IndexError, "take_strings: index out of range"); goto done; }
        c = chunk_of(chunk_end, n_chunks, e, c);
        const sview_t *v = &chunks[c];
        Py_ssize_t j = e - (c ? chunk_end[c - 1] : 0);
        int32_t a = v->off[j], b = v->off[j + 1];
        if (b < a || a < v->off[0] || b > v->off[v->n]) { PyErr_SetString(PyExc_ValueError, "take_strings: offsets decrease"); goto done; }
        bytes += b - a;
    }
    if (bytes > INT32_MAX) { PyErr_SetString(PyExc_OverflowError, "take_strings: over 2 GiB of text"); goto done; }
    offs_o = PyBytes_FromStringAndSize(NULL, (n + 1) * 4);
    data_o = PyBytes_FromStringAndSize(NULL, bytes ? bytes : 1);
    valid_o = nulls ? PyBytes_FromStringAndSize(NULL, (n + 7) / 8) : (Py_INCREF(Py_None), Py_None);
    if (!offs_o || !data_o || !valid_o) goto done;
    {
        int32_t *off = (int32_t *)PyBytes_AS_STRING(offs_o);
        char *data = PyBytes_AS_STRING(data_o);
        uint8_t *valid = nulls ? (uint8_t *)PyBytes_AS_STRING(valid_o) : NULL;
        if (valid) memset(valid, 0, (size_t)(n + 7) / 8);
        int32_t len = 0;
        off[0] = 0;
        for (Py_ssize_t i = 0, c = 0; i < n; i++) {  /* pass 2: copy (indices checked above) */
            int64_t e = idx[i];
            if (e >= 0) {
                c = chunk_of(chunk_end, n_chunks, e, c);
                const sview_t *v = &chunks[c];
                Py_ssize_t j = e - (c ? chunk_end[c - 1] : 0);
                int32_t a = v->off[j], b = v->off[j + 1];
                memcpy(data + len, v->bytes + a, (size_t)(b - a));
                len += b - a;
                if (valid) valid[i >> 3] |= (uint8_t)(1u << (i & 7));
            }
            off[i + 1] = len;
        }
    }
    result = Py_BuildValue("OOOn", offs_o, data_o, valid_o, nulls);
done:
    Py_XDECREF(offs_o); Py_XDECREF(data_o); Py_XDECREF(valid_o);
    if (have_index) PyBuffer_Release(&index);
    for (Py_ssize_t i = 0; i < n_chunks && chunks; i++) sview_release(&chunks[i]);
    free(chunks); free(chunk_end);
    return result;
}

/* ------------------------------------------------------------------ decimals
 *
 * decimal_strings: non-negative fixed-point integers (units of 10**-scale) as plain decimal
 * strings, trailing zeros dropped ("0.000185", "12"), for the cost processor's USD amounts: one
 * pass instead of six Arrow string kernels.
 */

static PyObject *decimal_strings(PyObject *self, PyObject *args) {
    PyObject *values_o, *offs_o = NULL, *data_o = NULL, *result = NULL;
    int scale;
    if (!PyArg_ParseTuple(args, "Oi", &values_o, &scale)) return NULL;
    if (scale < 0 || scale > 18) { PyErr_SetString(PyExc_ValueError, "decimal_strings: scale must be 0..18"); return NULL; }
    Py_buffer values = {0};
    if (PyObject_GetBuffer(values_o, &values, PyBUF_SIMPLE)) return NULL;
    if (values.len % 8) { PyErr_SetString(PyExc_ValueError, "decimal_strings: values must be int64"); goto done; }
    {
        const int64_t *v = values.buf;
        Py_ssize_t n = values.len / 8;
        if (n > (INT32_MAX - 1) / 40) { PyErr_SetString(PyExc_OverflowError, "decimal_strings: too many values"); goto done; }
        offs_o = PyBytes_FromStringAndSize(NULL, (n + 1) * 4);
        data_o = PyBytes_FromStringAndSize(NULL, n * 40 + 1);  /* 19 digits + '.' + 18 digits at most */
        if (!offs_o || !data_o) goto done;
        int32_t *off = (int32_t *)PyBytes_AS_STRING(offs_o);
        char *out = PyBytes_AS_STRING(data_o), *p = out;
        uint64_t unit = 1;
        for (int k = 0; k < scale; k++) unit *= 10;
        off[0] = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (v[i] < 0) { PyErr_SetString(PyExc_ValueError, "decimal_strings: negative value"); goto done; }
            uint64_t whole = (uint64_t)v[i] / unit, frac = (uint64_t)v[i] % unit;
            char tmp[20];
            int len = 0;
            do { tmp[len++] = (char)('0' + whole % 10); whole /= 10; } while (whole);
            while (len) *p++ = tmp[--len];
            if (frac) {
                int digits = scale;
                while (frac % 10 == 0) { frac /= 10; digits--; }  /* trailing zeros dropped */
                *p++ = '.';
                for (int k = digits - 1; k >= 0; k--) { p[k] = (char)('0' + frac % 10); frac /= 10; }
                p += digits;
            }
            off[i + 1] = (int32_t)(p - out);
        }
        if (_PyBytes_Resize(&data_o, (p - out) ? (p - out) : 1)) goto done;  /* frees data_o on failure */
        result = Py_BuildValue("OO", offs_o, data_o);
    }
done:
    Py_XDECREF(offs_o); Py_XDECREF(data_o);
    PyBuffer_Release(&values);
    return result;
}

/* entry_index: out[lut[codes[e]] * n + position[owners[e]]] = e for every attribute entry e whose key
 * is wanted (lut >= 0) and whose span is (position >= 0): which entry holds each (key, span) of a
 * read, in one pass instead of numpy's four (a duplicated key: the last one wins). */
static PyObject *entry_index(PyObject *self, PyObject *args) {
    PyObject *codes_o, *owners_o, *lut_o, *position_o, *out_o;
    if (!PyArg_ParseTuple(args, "OOOOO", &codes_o, &owners_o, &lut_o, &position_o, &out_o)) return NULL;
    Py_buffer b[5] = {{0}};
    int held = 0;
    PyObject *result = NULL;
    PyObject *objs[5] = {codes_o, owners_o, lut_o, position_o, out_o};
    for (; held < 5; held++)
        if (PyObject_GetBuffer(objs[held], &b[held], held == 4 ? PyBUF_WRITABLE : PyBUF_SIMPLE)) goto done;
    {
        const int32_t *codes = b[0].buf, *owners = b[1].buf, *lut = b[2].buf, *position = b[3].buf;
        int64_t *out = b[4].buf;
        Py_ssize_t entries = b[0].len / 4, n_codes = b[2].len / 4, n_rows = b[3].len / 4, n_out = b[4].len / 8;
        if (b[1].len != b[0].len || b[0].len % 4 || b[2].len % 4 || b[3].len % 4 || b[4].len % 8) {
            PyErr_SetString(PyExc_ValueError, "entry_index: codes and owners must be int32 of one length, out int64");
            goto done;
        }
        int32_t n = 0;  /* positions are 0..n-1: the largest one + 1 */
        for (Py_ssize_t r = 0; r < n_rows; r++) if (position[r] >= n) n = position[r] + 1;
        for (Py_ssize_t e = 0; e < entries; e++) {
            int32_t c = codes[e], o = owners[e];
            if (c < 0 || c >= n_codes || o < 0 || o >= n_rows) {
                PyErr_SetString(PyExc_IndexError, "entry_index: code or owner out of range");
                goto done;
            }
            int32_t k = lut[c], p = position[o];
            if (k < 0 || p < 0) continue;
            Py_ssize_t slot = (Py_ssize_t)k * n + p;
            if (slot >= n_out) { PyErr_SetString(PyExc_IndexError, "entry_index: out too small"); goto done; }
            out[slot] = e;
        }
        Py_INCREF(Py_None);
        result = Py_None;
    }
done:
    for (int i = 0; i < held; i++) PyBuffer_Release(&b[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_O,
     "decode(bytes) -> dict of Arrow column buffers for an ExportTraceServiceRequest"},
    {"merge_map", merge_map, METH_VARARGS,
     "merge_map(n_rows, old_start, keep, keys, value_chunks, new_start, new_keys, new_values, out) -> "
     "(entries, key bytes, value bytes) written into out's (map offsets, key offsets, key data, "
     "value offsets, value data)"},
    {"take_strings", take_strings, METH_VARARGS,
     "take_strings(chunks, index) -> (offsets, data, validity or None, null count) of the string array "
     "of chunks' entries at index (int64, across the chunks; -1 for null)"},
    {"decimal_strings", decimal_strings, METH_VARARGS,
     "decimal_strings(values, scale) -> (offsets, data) of the string array of non-negative int64 "
     "values in units of 10**-scale (0..18), as plain decimals with trailing zeros dropped"},
    {"entry_index", entry_index, METH_VARARGS,
     "entry_index(codes, owners, lut, position, out) -> None; out[lut[codes[e]] * n + position[owners[e]]] = e "
     "where both are >= 0 (int32 inputs, int64 out, n = max(position) + 1)"},
    {"key_codes", key_codes, METH_VARARGS,
     "key_codes((offsets, data, offset, length), codes) -> the distinct strings in order of first "
     "appearance; codes (int32, writable, one per string) gets each string's index among them"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_otlp_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__otlp_native(void) { return PyModule_Create(&module); }
