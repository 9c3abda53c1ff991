// Nearest-code search and fused vector quantisation (forward and backward), CUDA.
//
// Same algorithm and contract as kernels/vq_search.py and kernels/vq_codebook_grad.py
// (see mcc_fast/ops/vq.py): up to 4 "segments" (z_s (N_s, d) searching codebook rows
// [start_s, start_s + num_s)) per launch; running top-2 per row, re-ranked by the exact fp32
// pairwise difference; rows of z with NaN/Inf get index -1; non-finite codebook rows are
// never chosen. The dot products use fp32 FMA on the SIMT cores (no tensor cores): every
// dtype is widened to fp32 in shared memory, so fp32 inputs get the "ieee" accuracy.
//
// Pointers, sizes, strides (in elements) and the stream are passed as integers; per-segment
// arguments are lists with one entry per segment.
#pragma once
#include <cstdint>
#include <vector>

#include "vq_search_types.h"

namespace mcc {

using IVec = std::vector<I64>;

// Number of search blocks (= loss partials) of a segment with n rows.
I64 vq_search_blocks(I64 n);

// tensor_cores != 0: the dot products of the search on tensor cores (fp16/bf16 operands, or
// fp32 rounded to TF32; sm_80 and newer, older GPUs use FMA), else fp32 FMA; the two best
// candidates are re-ranked exactly either way.
// fused == 0: indices and distances only (zq_out, counts32, counts64, parts, loss, perplexity,
// usage may be 0). Otherwise also z_q (contiguous (sum N_s, d), rows in segment order),
// int32 histograms counts32 (zeroed by the caller; sum num_s entries), their int64 copy
// counts64, loss partials parts (sum of vq_search_blocks(N_s) floats), and per segment
// loss / perplexity / usage (float32). esq: float32 scratch of K entries.
void vq_search_forward(const std::vector<std::intptr_t>& z, const IVec& z_stride_n, const IVec& z_stride_d,
                       const IVec& n, const IVec& start, const IVec& num, std::intptr_t codebook,
                       I64 cb_stride_k, I64 cb_stride_d, I64 codes, I64 d, int dtype, std::intptr_t esq,
                       std::intptr_t indices_out, std::intptr_t distances_out, int fused, int tensor_cores,
                       double beta,
                       std::intptr_t zq_out, std::intptr_t counts32, std::intptr_t counts64, std::intptr_t parts,
                       std::intptr_t loss, std::intptr_t perplexity, std::intptr_t usage, std::intptr_t stream);

// Per-row backward: grad_z (contiguous (sum N_s, d), z's dtype) = grad_zq + g_s*2*beta/M_s*(z - e);
// with atomic != 0 also grad_cb32[k] += g_s*2/M_s*(e_k - z) (float32 (K, d), zeroed by the
// caller). grad_zq[s] == 0: no z_q gradient; grad_loss == 0: no loss gradient (float32 (S,)).
void vq_backward_rows(const std::vector<std::intptr_t>& z, const IVec& z_stride_n, const IVec& z_stride_d,
                      const std::vector<std::intptr_t>& grad_zq, const IVec& g_stride_n, const IVec& g_stride_d,
                      const IVec& n, std::intptr_t codebook, I64 cb_stride_k, I64 cb_stride_d, I64 d, int dtype,
                      std::intptr_t indices, std::intptr_t grad_loss, double beta, std::intptr_t grad_z_out,
                      int atomic, std::intptr_t grad_cb32, std::intptr_t stream);

// Deterministic codebook gradient: sorted_codes / order (int64, total rows) from a stable
// sort of the indices, bounds (int64, K + 1) = searchsorted(sorted_codes, 0..K). Scratch:
// head, tail (float32, n_chunks x d), inner (float32, K x d). Writes grad_cb (K, d) in the
// codebook dtype.
I64 vq_segsum_chunk_rows();
void vq_codebook_grad_sorted(const std::vector<std::intptr_t>& z, const IVec& z_stride_n, const IVec& z_stride_d,
                             const IVec& n, std::intptr_t codebook, I64 cb_stride_k, I64 cb_stride_d, I64 codes,
                             I64 d, int dtype, std::intptr_t sorted_codes, std::intptr_t order,
                             std::intptr_t bounds, std::intptr_t grad_loss, std::intptr_t head, std::intptr_t tail,
                             std::intptr_t inner, std::intptr_t grad_cb, std::intptr_t stream);

}  // namespace mcc
