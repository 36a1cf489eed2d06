# Test properties of the GGUF team's tests (included by CMakeLists.txt after the tests exist).
# The llama.cpp interop test starts node (real llama.cpp) seven times and exports stories260K five
# times: ~20 s in Release on the shared 2-core VM, more under load. It is labelled slow so the
# ASan+UBSan pass (`ctest -LE slow`) leaves it out; it passes under ASan too when run directly.
if(TEST test_llamacpp_interop)
  set_tests_properties(test_llamacpp_interop PROPERTIES LABELS slow)
endif()
# The mixture comparison quantizes a 16-layer 256-wide model and stories260K ten times each with piso
# and with llama.cpp's own quantizer: ~30 s in Release; slow for the ASan pass as well.
if(TEST test_gguf_mixtures)
  set_tests_properties(test_gguf_mixtures PROPERTIES LABELS slow)
endif()
# KL divergence and HellaSwag against llama.cpp (tests/llamacpp/evals.mjs): five exports of
# stories260K, four llama.cpp evaluations of the cs336 sample and 24 HellaSwag tasks: ~40 s on an idle
# 2-core VM, minutes under load (node-llama-cpp hands out each position's logits through its sampler).
if(TEST test_llamacpp_evals)
  set_tests_properties(test_llamacpp_evals PROPERTIES LABELS slow TIMEOUT 900)
endif()
# Mixed precision through the CLI: three whole-model runs (costs of every candidate, one-layer KL
# probes, the final pass) on stories260K: ~20 s in Release on the shared VM; slow for the ASan pass
# (test_mixed, the knapsack against brute force, stays in it).
if(TEST test_mixed_cli)
  set_tests_properties(test_mixed_cli PROPERTIES LABELS slow)
endif()
