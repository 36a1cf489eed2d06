/* The ggml traits table, row by row: sizes against llama.cpp's list, fallback chains, file type
 * ids, name lookups, pack/unpack round trips on random bytes, and dequantization of random blocks
 * against the level formulas evaluated here from the decoded fields. */
#include "harness.h"
#include "piso/ggml_quants.h"
#include "piso/gguf.h"

#include <stdint.h>
#include <string.h>

static uint32_t rng = 2024;
static uint32_t next(void) { return rng = rng * 1664525u + 1013904223u; }

/* (type, block size, bytes) from gguf-py's GGML_QUANT_SIZES */
static const int sizes[][3] = {{GGML_T_F32, 1, 4},       {GGML_T_F16, 1, 2},      {GGML_T_BF16, 1, 2},
                               {GGML_T_Q4_0, 32, 18},    {GGML_T_Q4_1, 32, 20},   {GGML_T_Q5_0, 32, 22},
                               {GGML_T_Q5_1, 32, 24},    {GGML_T_Q8_0, 32, 34},   {GGML_T_Q8_1, 32, 36},
                               {GGML_T_Q2_K, 256, 84},   {GGML_T_Q3_K, 256, 110}, {GGML_T_Q4_K, 256, 144},
                               {GGML_T_Q5_K, 256, 176},  {GGML_T_Q6_K, 256, 210}, {GGML_T_Q8_K, 256, 292},
                               {GGML_T_IQ4_NL, 32, 18},  {GGML_T_MXFP4, 32, 17},  {GGML_T_NVFP4, 64, 36}};

static void test_sizes_and_names(void) {
    int n_known = 0;
    for (int t = 0; t < GGML_T_COUNT; t++) {
        const struct piso_ggml_traits *tr = piso_ggml_traits(t);
        if (!tr) continue;
        n_known++;
        int found = 0;
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            if (sizes[i][0] == t) {
                found = 1;
                CHECK(tr->blck_size == sizes[i][1] && tr->type_size == sizes[i][2], "%s: block %d bytes %d", tr->name,
                      tr->blck_size, tr->type_size);
            }
        CHECK(found, "%s: not in the reference size list", tr->name);
        CHECK(piso_ggml_row_size(t, 4 * tr->blck_size) == (size_t)(4 * tr->type_size), "%s: row size", tr->name);
        int back = -1;
        CHECK(piso_ggml_type_from_name(tr->name, &back) == 0 && back == t, "%s: name lookup", tr->name);
        char upper[16];
        size_t k = 0;
        for (; tr->name[k] && k < sizeof upper - 1; k++) upper[k] = (char)(tr->name[k] >= 'a' && tr->name[k] <= 'z' ? tr->name[k] - 32 : tr->name[k]);
        upper[k] = 0;
        CHECK(piso_ggml_type_from_name(upper, &back) == 0 && back == t, "%s: upper-case lookup", upper);
    }
    CHECK(n_known == (int)(sizeof sizes / sizeof sizes[0]), "%d known types", n_known);
    int dummy;
    CHECK(piso_ggml_type_from_name("q4_2", &dummy) != 0, "unknown name refused");
    CHECK(!piso_ggml_traits(-1) && !piso_ggml_traits(GGML_T_COUNT) && !piso_ggml_traits(4), "unknown ids");
}

static void test_fallbacks_and_file_types(void) {
    int seen[64];
    int n_seen = 0;
    for (int t = 0; t < GGML_T_COUNT; t++) {
        const struct piso_ggml_traits *tr = piso_ggml_traits(t);
        if (!tr) continue;
        /* each step shrinks the block, so the chain ends; it ends in a type without fallback */
        int cur = t, steps = 0;
        while (piso_ggml_traits(cur)->fallback != GGML_T_NONE && steps < 8) {
            const int fb = piso_ggml_traits(cur)->fallback;
            CHECK(piso_ggml_traits(fb) && piso_ggml_traits(fb)->blck_size < piso_ggml_traits(cur)->blck_size,
                  "%s: fallback %d has a smaller block", piso_ggml_traits(cur)->name, fb);
            if (!piso_ggml_traits(fb)) break;
            cur = fb, steps++;
        }
        const struct piso_ggml_traits *end = piso_ggml_traits(cur);
        CHECK(end->fallback == GGML_T_NONE && (end->blck_size == 1 || end->blck_size == 32), "%s: chain ends in %s",
              tr->name, end->name);
        /* the row type: the first of the chain dividing the row */
        for (int ne0 = 16; ne0 <= 768; ne0 += 16) {
            const int rt = piso_ggml_type_for_row(t, ne0);
            CHECK(ne0 % piso_ggml_traits(rt)->blck_size == 0, "%s: row %d gets %s", tr->name, ne0, piso_ggml_traits(rt)->name);
            if (ne0 % tr->blck_size == 0) CHECK(rt == t, "%s: row %d keeps its type", tr->name, ne0);
        }
        if (tr->file_type >= 0) {
            for (int i = 0; i < n_seen; i++) CHECK(seen[i] != tr->file_type, "%s: file type %d repeated", tr->name, tr->file_type);
            seen[n_seen++] = tr->file_type;
        }
        CHECK((tr->file_type >= 0) == (tr->to_float && tr->from_float), "%s: file type iff writable", tr->name);
    }
    /* llama.cpp's LLAMA_FTYPE ids */
    CHECK(piso_ggml_traits(GGML_T_Q4_K)->file_type == 15 && piso_ggml_traits(GGML_T_Q8_0)->file_type == 7 &&
              piso_ggml_traits(GGML_T_BF16)->file_type == 32 && piso_ggml_traits(GGML_T_IQ4_NL)->file_type == 25,
          "file type ids");
    CHECK(piso_ggml_type_for_row(GGML_T_Q4_K, 96) == GGML_T_Q5_0 && piso_ggml_type_for_row(GGML_T_Q4_K, 80) == GGML_T_F16 &&
              piso_ggml_type_for_row(GGML_T_Q6_K, 64) == GGML_T_Q8_0,
          "llama.cpp's fallbacks");
}

/* Value of element i of a decoded block by the level formula of the table's fields. */
static float value32(const struct piso_ggml_traits *tr, const struct piso_blk32 *b, int i) {
    if (tr->scale_kind == PISO_SCALE_E8M0) return ldexpf(1.0f, (int)b->d - 128) * (float)tr->level_values[b->q[i]];
    const float d = piso_fp16_to_fp32(b->d);
    if (tr->level_values) return d * (float)tr->level_values[b->q[i]];
    if (tr->has_min) return d * (float)b->q[i] + piso_fp16_to_fp32(b->m);
    return d * (float)(b->q[i] - tr->code_zero);
}

static float value256(const struct piso_ggml_traits *tr, const struct piso_blk256 *b, int i) {
    const float d = piso_fp16_to_fp32(b->d);
    const int j = i / tr->sub_size;
    if (tr->has_min && tr->sub_size == 16) /* Q2_K */
        return d * (float)b->sc16[j] * (float)b->q[i] - piso_fp16_to_fp32(b->dmin) * (float)b->mn16[j];
    if (tr->has_min) return d * (float)b->sc[j] * (float)b->q[i] - piso_fp16_to_fp32(b->dmin) * (float)b->mn[j];
    return d * (float)b->sc6[j] * (float)(b->q[i] - tr->code_zero);
}

static void test_blocks(void) {
    for (int t = 0; t < GGML_T_COUNT; t++) {
        const struct piso_ggml_traits *tr = piso_ggml_traits(t);
        if (!tr || !tr->pack) continue;
        int bad_trip = 0, bad_value = 0, bad_level = 0;
        for (int rep = 0; rep < 200; rep++) {
            uint8_t bytes[256], again[256];
            for (int i = 0; i < tr->type_size; i++) bytes[i] = (uint8_t)(next() >> 13);
            /* keep the fp16 scales finite and moderate: exponent field 8..22 */
            float y[256];
            if (tr->blck_size == 64) { /* NVFP4: UE4M3 codes 0..0x7F, E2M1 indices */
                struct piso_blk64 b;
                tr->unpack(bytes, &b);
                for (int s = 0; s < 4; s++) b.d[s] &= 0x7F;
                tr->pack(&b, bytes);
                tr->unpack(bytes, &b);
                tr->pack(&b, again);
                tr->to_float(bytes, y, 64);
                for (int i = 0; i < 64; i++) {
                    const int c = b.d[i / 16], e = (c >> 3) & 15, m = c & 7;
                    const float sc = c == 0x7F ? 0.0f : e ? ldexpf(1.0f + m / 8.0f, e - 8) : ldexpf((float)m, -10);
                    bad_value += y[i] != (float)tr->level_values[b.q[i]] * sc;
                    bad_level += b.q[i] > 15;
                }
            } else if (tr->blck_size == 32) {
                struct piso_blk32 b;
                tr->unpack(bytes, &b);
                b.d = (uint16_t)((b.d & 0x83ff) | (8 + next() % 15) << 10), b.m = (uint16_t)((b.m & 0x83ff) | (8 + next() % 15) << 10);
                tr->pack(&b, bytes);
                tr->unpack(bytes, &b);
                tr->pack(&b, again);
                tr->to_float(bytes, y, 32);
                for (int i = 0; i < 32; i++) {
                    bad_value += y[i] != value32(tr, &b, i);
                    const int l = b.q[i] - (tr->level_values || tr->has_min ? 0 : tr->code_zero);
                    bad_level += tr->grid && (l < tr->level_min - 1 || l > tr->level_max); /* Q8_0 stores -128 too */
                }
            } else {
                struct piso_blk256 b;
                tr->unpack(bytes, &b);
                b.d = (uint16_t)((b.d & 0x83ff) | (8 + next() % 15) << 10), b.dmin = (uint16_t)((b.dmin & 0x83ff) | (8 + next() % 15) << 10);
                tr->pack(&b, bytes);
                tr->unpack(bytes, &b);
                tr->pack(&b, again);
                tr->to_float(bytes, y, 256);
                for (int i = 0; i < 256; i++) {
                    bad_value += y[i] != value256(tr, &b, i);
                    bad_level += b.q[i] - tr->code_zero < tr->level_min || b.q[i] - tr->code_zero > tr->level_max;
                }
            }
            bad_trip += memcmp(bytes, again, (size_t)tr->type_size) != 0;
        }
        CHECK(bad_trip == 0, "%s: %d blocks do not survive unpack/pack", tr->name, bad_trip);
        CHECK(bad_value == 0, "%s: %d values differ from the level formula", tr->name, bad_value);
        CHECK(bad_level == 0, "%s: %d codes outside the levels", tr->name, bad_level);

        /* the reference rule: from_float is quantize_ref without an imatrix; its codes lie in the levels */
        float x[512], imat[512];
        uint8_t q1[512 / 32 * 34], q2[sizeof q1];
        for (int i = 0; i < 512; i++) x[i] = (float)(int)(next() >> 20) / 2048.0f - 1.0f, imat[i] = 0.5f + (float)(next() >> 24) / 256.0f;
        tr->from_float(x, q1, 512);
        tr->quantize_ref(x, q2, 512, NULL);
        CHECK(!memcmp(q1, q2, piso_ggml_row_size(t, 512)), "%s: from_float = quantize_ref(no imatrix)", tr->name);
        CHECK(piso_ggml_quantize_ref(t, x, q2, 2, 256, imat) == piso_ggml_row_size(t, 512), "%s: bytes written", tr->name);
        int out_of_levels = 0;
        for (int ib = 0; ib < 512 / tr->blck_size; ib++) {
            const uint8_t *p = q2 + (size_t)ib * tr->type_size;
            if (tr->blck_size == 64) {
                struct piso_blk64 b;
                tr->unpack(p, &b);
                for (int i = 0; i < 64; i++) out_of_levels += b.q[i] > 15 || b.d[i / 16] > 0x7E;
            } else if (tr->blck_size == 32) {
                struct piso_blk32 b;
                tr->unpack(p, &b);
                for (int i = 0; i < 32; i++) {
                    const int l = b.q[i] - (tr->level_values || tr->has_min ? 0 : tr->code_zero);
                    out_of_levels += l < tr->level_min || l > tr->level_max;
                }
            } else {
                struct piso_blk256 b;
                tr->unpack(p, &b);
                for (int i = 0; i < 256; i++)
                    out_of_levels += b.q[i] - tr->code_zero < tr->level_min || b.q[i] - tr->code_zero > tr->level_max;
            }
        }
        CHECK(out_of_levels == 0, "%s: reference rule writes %d codes outside the levels", tr->name, out_of_levels);
    }
}

int main(void) {
    test_sizes_and_names();
    test_fallbacks_and_file_types();
    test_blocks();
    return test_finish();
}
