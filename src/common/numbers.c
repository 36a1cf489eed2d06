/* dtype table and fp16/bf16 conversions (round to nearest even). */
#include "piso/common.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_traits[PISO_DTYPE_COUNT] = {
    [PISO_DTYPE_F32] = {"F32", 4},  [PISO_DTYPE_F16] = {"F16", 2}, [PISO_DTYPE_BF16] = {"BF16", 2},
    [PISO_DTYPE_F64] = {"F64", 8},  [PISO_DTYPE_I8] = {"I8", 1},   [PISO_DTYPE_U8] = {"U8", 1},
    [PISO_DTYPE_I16] = {"I16", 2},  [PISO_DTYPE_I32] = {"I32", 4}, [PISO_DTYPE_I64] = {"I64", 8},
    [PISO_DTYPE_BOOL] = {"BOOL", 1},
};

const char *piso_dtype_name(enum piso_dtype t) {
    return (unsigned)t < PISO_DTYPE_COUNT ? dtype_traits[t].name : "?";
}
size_t piso_dtype_size(enum piso_dtype t) {
    return (unsigned)t < PISO_DTYPE_COUNT ? dtype_traits[t].size : 0;
}
int piso_dtype_from_name(const char *name, enum piso_dtype *out) {
    for (int i = 0; i < PISO_DTYPE_COUNT; i++)
        if (strcmp(name, dtype_traits[i].name) == 0) {
            *out = (enum piso_dtype)i;
            return 0;
        }
    return -1;
}

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t piso_fp32_to_fp16(float f) {
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or NaN */
        return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (absx < 0x38800000u) { /* subnormal half (|f| < 2^-14): scale to units of 2^-24 */
        float a = bits_f32(absx) * 16777216.0f; /* exact: power-of-two scaling */
        /* rint under the default rounding mode rounds half to even */
        return (uint16_t)(sign | (uint32_t)rintf(a));
    }
    uint32_t mant = absx & 0x7fffffu;
    uint32_t exp = (absx >> 23) - 127 + 15;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* carries into the exponent correctly */
    return (uint16_t)(sign | h);
}

float piso_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        float v = (float)mant * (1.0f / 16777216.0f); /* mant * 2^-24 */
        return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

uint16_t piso_fp32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    uint32_t lsb = (x >> 16) & 1u;
    x += 0x7fffu + lsb;
    return (uint16_t)(x >> 16);
}

float piso_bf16_to_fp32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

/* Unaligned 16-bit halves (F16 or BF16) to F32 with the given decoder. */
static void halves_to_f32(const uint8_t *s, float *dst, size_t n, float (*decode)(uint16_t)) {
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = decode(h);
    }
}

int piso_convert_to_f32(enum piso_dtype t, const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    switch (t) {
    case PISO_DTYPE_F32: memmove(dst, src, n * 4); return 0;
    case PISO_DTYPE_F16: halves_to_f32(s, dst, n, piso_fp16_to_fp32); return 0;
    case PISO_DTYPE_BF16: halves_to_f32(s, dst, n, piso_bf16_to_fp32); return 0;
    case PISO_DTYPE_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, s + 8 * i, 8);
            dst[i] = (float)d;
        }
        return 0;
    default: return piso_errorf("cannot convert dtype %s to F32", piso_dtype_name(t));
    }
}

int64_t piso_find_nonfinite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return (int64_t)i;
    return -1;
}
