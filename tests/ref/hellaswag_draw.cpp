// Independent reference for llama-perplexity's HellaSwag task draw, compiled by the tests with g++:
// std::mt19937 seeded 1; each draw is std::uniform_int_distribution<size_t>(0, left - 1) over the
// tasks not drawn yet, and the drawn task is erased from the list (llama-perplexity erases its 6
// lines from the prompt).
//   hellaswag_draw TOTAL N      prints the N drawn task indices (0-based), one per line
//   hellaswag_draw --raw SEED K prints the first K outputs of std::mt19937(SEED)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--raw")) {
        std::mt19937 g((unsigned)strtoul(argv[2], nullptr, 10));
        for (long k = strtol(argv[3], nullptr, 10); k > 0; k--) printf("%u\n", (unsigned)g());
        return 0;
    }
    if (argc != 3) return 2;
    size_t total = strtoul(argv[1], nullptr, 10), n = strtoul(argv[2], nullptr, 10);
    std::vector<size_t> left;
    for (size_t i = 0; i < total; i++) left.push_back(i);
    std::mt19937 rng(1);
    for (size_t i = 0; i < n && !left.empty(); i++) {
        std::uniform_int_distribution<size_t> dist(0, left.size() - 1);
        size_t k = dist(rng);
        printf("%zu\n", left[k]);
        left.erase(left.begin() + (long)k);
    }
    return 0;
}
