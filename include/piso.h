/* piso.h — public API of the piso library (post-training quantization with exact optimal scales).
 * Data flow: load (model.h) → calibrate → solve (quant.h) → export → evaluate. */
#ifndef PISO_H
#define PISO_H

#include "piso/common.h"
#include "piso/gguf.h"
#include "piso/model.h"
#include "piso/quant.h"
#include "piso/safetensors.h"
#include "piso/tokenizer.h"

#endif
