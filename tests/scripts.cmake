# Test properties of the GGUF team's tests (included by CMakeLists.txt after the tests exist).
# The llama.cpp interop test starts node five times and exports stories260K five times: it runs
# in the Release suite (~20 s) and is left out of the ASan+UBSan pass (`ctest -LE slow`), where
# the sanitized exports alone take over a minute on 2 cores.
if(TEST test_llamacpp_interop)
  set_tests_properties(test_llamacpp_interop PROPERTIES LABELS slow)
endif()
