// Nearest-code search over a contiguous block of codebook rows.
#pragma once
#include <cstdint>

namespace mcc {

// For each of the n query rows of z (n, d), finds the codebook row in [start, start + num)
// with the smallest squared Euclidean distance (accumulated in fp32; ties -> lowest index).
// Writes int64 indices into the whole codebook and the fp32 squared distance.
void nearest_code_forward(std::intptr_t z, std::int64_t z_stride_n, std::int64_t z_stride_d,
                          std::intptr_t codebook, std::int64_t cb_stride_k, std::int64_t cb_stride_d,
                          std::int64_t n, std::int64_t d, std::int64_t start, std::int64_t num,
                          int dtype, std::intptr_t indices_out, std::intptr_t distances_out,
                          std::intptr_t stream);

}  // namespace mcc
