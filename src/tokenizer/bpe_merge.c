/* The BPE merge loop over one word, shared by every family.
 *
 * Symbols start as the word's UTF-8 characters in a doubly linked list; candidate pairs wait in a
 * binary heap ordered by cost (rank, or minus the merged piece's score), ties to the leftmost pair,
 * which is the order SentencePiece, llama.cpp and HF tokenizers all use. A popped candidate is
 * stale if either side has changed since it was pushed; merging keeps the left symbol. */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

struct sym {
    int start, len; /* bytes of the word covered; len 0 = merged away */
    int id;         /* rank mode: current token id (-1 unknown) */
    int prev, next;
};

struct cand {
    double cost;
    int left, right;
    int a, b;   /* rank mode: ids of the sides when pushed; score mode: a = merged length */
    int result; /* merged id */
};

struct heap {
    struct cand *v;
    int n, cap, oom;
};

static int cand_before(const struct cand *x, const struct cand *y) {
    return x->cost < y->cost || (x->cost == y->cost && x->left < y->left);
}

static void heap_push(struct heap *h, struct cand c) {
    if (h->oom) return;
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 64;
        struct cand *v = realloc(h->v, (size_t)cap * sizeof *h->v);
        if (!v) { /* the merge stops short; piso_tok_merge_word reports it */
            h->oom = 1;
            return;
        }
        h->v = v, h->cap = cap;
    }
    int i = h->n++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_before(&c, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = c;
}

static struct cand heap_pop(struct heap *h) {
    struct cand top = h->v[0], last = h->v[--h->n];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        const struct cand *best = &last;
        if (l < h->n && cand_before(&h->v[l], best)) { m = l; best = &h->v[l]; }
        if (r < h->n && cand_before(&h->v[r], best)) { m = r; }
        if (m == i) break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n > 0) h->v[i] = last;
    return top;
}

static void try_pair(const struct piso_tokenizer *t, const char *text, const struct sym *s, int l, int r,
                     struct heap *h) {
    if (l < 0 || r < 0) return;
    struct cand c = {0};
    c.left = l;
    c.right = r;
    if (t->merge_mode == TOK_MERGE_RANK) {
        int rank = piso_tok_pair_find(t, s[l].id, s[r].id);
        if (rank < 0) return;
        c.cost = rank;
        c.a = s[l].id;
        c.b = s[r].id;
        c.result = t->merge_result[rank];
    } else {
        int id = piso_tok_lookup(t, text + s[l].start, (size_t)(s[l].len + s[r].len));
        if (id < 0) return;
        c.cost = -(double)t->v.scores[id];
        c.a = s[l].len + s[r].len;
        c.result = id;
    }
    heap_push(h, c);
}

static void push_unknown_bytes(const struct piso_tokenizer *t, const unsigned char *p, int n, struct tok_ids *out) {
    for (int k = 0; k < n; k++) {
        int id = t->byte_token[p[k]];
        if (id < 0) id = t->v.unk_id;
        if (id >= 0) piso_tok_ids_push(out, id);
    }
}

int piso_tok_merge_word(const struct piso_tokenizer *t, const char *text, size_t n, struct tok_ids *out) {
    if (n == 0) return 0;
    if (n > 0x7fffffff) return piso_errorf("%s: text too long to tokenize", t->source);
    struct sym *s = malloc(n * sizeof *s);
    if (!s) return piso_errorf("%s: out of memory tokenizing %zu bytes", t->source, n);
    int ns = 0;
    for (size_t i = 0; i < n;) {
        /* one character; a lead byte without its continuation bytes stands alone (invalid UTF-8
         * then round-trips through byte fallback; llama.cpp would take the lead byte's length) */
        int cl = piso_tok_utf8_len((unsigned char)text[i]);
        if ((size_t)cl > n - i) cl = (int)(n - i);
        for (int k = 1; k < cl; k++)
            if (((unsigned char)text[i + k] & 0xC0) != 0x80) {
                cl = k;
                break;
            }
        int id = -1;
        if (t->merge_mode == TOK_MERGE_RANK) {
            id = piso_tok_lookup(t, text + i, (size_t)cl);
            if (id < 0 && t->byte_fallback) {
                int ok = 1;
                for (int k = 0; k < cl; k++) ok &= t->byte_token[(unsigned char)text[i + k]] >= 0;
                if (ok) { /* one symbol per byte, each already a token */
                    for (int k = 0; k < cl; k++)
                        s[ns++] = (struct sym){(int)i + k, 1, t->byte_token[(unsigned char)text[i + k]], 0, 0};
                    i += (size_t)cl;
                    continue;
                }
            }
            if (id < 0) {
                id = t->v.unk_id;
                if (t->fuse_unk && ns > 0 && s[ns - 1].id == id && id >= 0 &&
                    s[ns - 1].start + s[ns - 1].len == (int)i && t->v.unk_id >= 0) {
                    s[ns - 1].len += cl; /* consecutive unknowns fuse */
                    i += (size_t)cl;
                    continue;
                }
            }
        }
        s[ns++] = (struct sym){(int)i, cl, id, 0, 0};
        i += (size_t)cl;
    }
    for (int k = 0; k < ns; k++) {
        s[k].prev = k - 1;
        s[k].next = k + 1 < ns ? k + 1 : -1;
    }
    struct heap h = {0};
    for (int k = 0; k + 1 < ns; k++) try_pair(t, text, s, k, k + 1, &h);
    while (h.n > 0) {
        struct cand c = heap_pop(&h);
        struct sym *L = &s[c.left], *R = &s[c.right];
        if (L->len == 0 || R->len == 0 || L->next != c.right) continue;
        if (t->merge_mode == TOK_MERGE_RANK ? (L->id != c.a || R->id != c.b) : (L->len + R->len != c.a))
            continue;
        L->len += R->len;
        L->id = c.result;
        L->next = R->next;
        if (R->next >= 0) s[R->next].prev = c.left;
        R->len = 0;
        try_pair(t, text, s, L->prev, c.left, &h);
        try_pair(t, text, s, c.left, L->next, &h);
    }
    free(h.v);
    if (h.oom) {
        free(s);
        return piso_errorf("%s: out of memory merging %zu bytes", t->source, n);
    }
    for (int k = 0; ns > 0 && k >= 0; k = s[k].next) {
        int id = s[k].id;
        if (t->merge_mode == TOK_MERGE_SCORE) id = piso_tok_lookup(t, text + s[k].start, (size_t)s[k].len);
        if (id >= 0) piso_tok_ids_push(out, id);
        else if (t->merge_mode == TOK_MERGE_SCORE)
            push_unknown_bytes(t, (const unsigned char *)text + s[k].start, s[k].len, out);
        /* rank mode without an unk token: the character is dropped, as HF does */
    }
    free(s);
    return 0;
}
