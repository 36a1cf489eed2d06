/* b-bit unsigned values packed into uint32 words (piso/checkpoint.h): a continuous little-endian
 * bit stream (GPTQ, where 3-bit values straddle words) or whole values per word (compressed-tensors). */
#include "piso/checkpoint.h"

void piso_pack_stream(const uint8_t *v, int64_t n, int bits, uint32_t *words, int64_t stride) {
    const uint32_t mask = (1u << bits) - 1;
    for (int64_t k = 0; k < n; k++) {
        const int64_t bit = k * bits, w = bit >> 5;
        const int off = (int)(bit & 31);
        const uint32_t x = v[k] & mask;
        words[w * stride] |= x << off;
        if (off + bits > 32) words[(w + 1) * stride] |= x >> (32 - off); /* the high bits spill over */
    }
}

uint8_t piso_unpack_stream(const uint32_t *words, int64_t k, int bits, int64_t stride) {
    const uint32_t mask = (1u << bits) - 1;
    const int64_t bit = k * bits, w = bit >> 5;
    const int off = (int)(bit & 31);
    uint32_t x = words[w * stride] >> off;
    if (off + bits > 32) x |= words[(w + 1) * stride] << (32 - off);
    return (uint8_t)(x & mask);
}

void piso_pack_words(const uint8_t *v, int64_t n, int bits, uint32_t *words, int64_t stride) {
    const int per = 32 / bits;
    const uint32_t mask = (1u << bits) - 1;
    for (int64_t k = 0; k < n; k++) words[(k / per) * stride] |= (uint32_t)(v[k] & mask) << (bits * (int)(k % per));
}

uint8_t piso_unpack_words(const uint32_t *words, int64_t k, int bits, int64_t stride) {
    const int per = 32 / bits;
    return (uint8_t)((words[(k / per) * stride] >> (bits * (int)(k % per))) & ((1u << bits) - 1));
}
