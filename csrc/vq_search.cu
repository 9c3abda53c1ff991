// Nearest-code search and fused vector quantisation: the launchers (kernels in
// vq_search_kernels.cuh; contract in vq_search.h).
#include "common.h"
#include "vq_search.h"
#include "vq_search_kernels.cuh"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace mcc {
namespace {

void check_segments(std::size_t nseg, std::initializer_list<std::size_t> sizes) {
  if (nseg < 1 || nseg > static_cast<std::size_t>(kVqMaxSegments))
    throw std::invalid_argument("mcc_fast vq: between 1 and 4 segments per launch, got " + std::to_string(nseg));
  for (std::size_t s : sizes)
    if (s != nseg) throw std::invalid_argument("mcc_fast vq: per-segment argument lists differ in length");
}

}  // namespace

I64 vq_search_blocks(I64 n) { return (n + kRows - 1) / kRows; }
I64 vq_segsum_chunk_rows() { return kChunk; }

void vq_search_forward(const std::vector<std::intptr_t>& z, const IVec& z_stride_n, const IVec& z_stride_d,
                       const IVec& n, const IVec& start, const IVec& num, std::intptr_t codebook,
                       I64 cb_stride_k, I64 cb_stride_d, I64 codes, I64 d, int dtype, std::intptr_t esq,
                       std::intptr_t indices_out, std::intptr_t distances_out, int fused, int tensor_cores,
                       double beta,
                       std::intptr_t zq_out, std::intptr_t counts32, std::intptr_t counts64, std::intptr_t parts,
                       std::intptr_t loss, std::intptr_t perplexity, std::intptr_t usage, std::intptr_t stream) {
  const std::size_t nseg = z.size();
  check_segments(nseg, {z_stride_n.size(), z_stride_d.size(), n.size(), start.size(), num.size()});
  if (d < 1 || d > (1 << 20)) throw std::invalid_argument("mcc_fast vq: bad d " + std::to_string(d));
  (void)codes;
  // launch order: segments with more codes first (their blocks are the long ones)
  std::vector<int> order(nseg);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return num[x] > num[y]; });
  SegArgs a{};
  a.nseg = static_cast<int>(nseg);
  I64 rb = 0, cbase = 0, blocks = 0;
  std::vector<I64> row_base(nseg), cnt_base(nseg);
  for (std::size_t s = 0; s < nseg; ++s) {
    row_base[s] = rb;
    cnt_base[s] = cbase;
    rb += n[s];
    cbase += num[s];
  }
  I64 lo = start[0], hi = start[0] + num[0];
  for (std::size_t q = 0; q < nseg; ++q) {
    const int s = order[q];
    a.out[q] = s;
    a.pstart[q] = blocks;
    a.z[q] = reinterpret_cast<const void*>(z[s]);
    a.zsn[q] = z_stride_n[s];
    a.zsd[q] = z_stride_d[s];
    a.n[q] = n[s];
    a.start[q] = start[s];
    a.num[q] = num[s];
    a.row_base[q] = row_base[s];
    a.cnt_base[q] = cnt_base[s];
    blocks += vq_search_blocks(n[s]);
    lo = std::min(lo, start[s]);
    hi = std::max(hi, start[s] + num[s]);
  }
  a.pstart[nseg] = blocks;
  cudaStream_t st = as_stream(stream);
  dispatch_float_types(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* cb = reinterpret_cast<const T*>(codebook);
    const I64 rows = hi - lo;
    sq_norms_kernel<T><<<static_cast<unsigned>((rows + 7) / 8), 256, 0, st>>>(
        cb, cb_stride_k, cb_stride_d, lo, hi, d, reinterpret_cast<float*>(esq));
    check_cuda(cudaGetLastError(), "vq sq_norms launch");
    if (blocks == 0) return;
    auto search = [&](auto kernel, bool with_outputs) {
      kernel<<<static_cast<unsigned>(blocks), kThreads, 0, st>>>(
          a, cb, cb_stride_k, cb_stride_d, static_cast<int>(d), reinterpret_cast<const float*>(esq),
          reinterpret_cast<I64*>(indices_out), reinterpret_cast<float*>(distances_out),
          with_outputs ? reinterpret_cast<T*>(zq_out) : nullptr,
          with_outputs ? reinterpret_cast<int*>(counts32) : nullptr,
          with_outputs ? reinterpret_cast<float*>(parts) : nullptr);
    };
    if (fused && tensor_cores) search(vq_search_kernel<T, true, true>, true);
    else if (fused) search(vq_search_kernel<T, true, false>, true);
    else if (tensor_cores) search(vq_search_kernel<T, false, true>, false);
    else search(vq_search_kernel<T, false, false>, false);
    check_cuda(cudaGetLastError(), "vq search launch");
  });
  if (fused) {
    vq_finalize_kernel<<<static_cast<unsigned>(nseg), kThreads, 0, st>>>(
        a, d, reinterpret_cast<const float*>(parts), reinterpret_cast<const int*>(counts32),
        reinterpret_cast<I64*>(counts64), static_cast<float>(beta), reinterpret_cast<float*>(loss),
        reinterpret_cast<float*>(perplexity), reinterpret_cast<float*>(usage));
    check_cuda(cudaGetLastError(), "vq finalize launch");
  }
}

void vq_backward_rows(const std::vector<std::intptr_t>& z, const IVec& z_stride_n, const IVec& z_stride_d,
                      const std::vector<std::intptr_t>& grad_zq, const IVec& g_stride_n, const IVec& g_stride_d,
                      const IVec& n, std::intptr_t codebook, I64 cb_stride_k, I64 cb_stride_d, I64 d, int dtype,
                      std::intptr_t indices, std::intptr_t grad_loss, double beta, std::intptr_t grad_z_out,
                      int atomic, std::intptr_t grad_cb32, std::intptr_t stream) {
  const std::size_t nseg = z.size();
  check_segments(nseg, {z_stride_n.size(), z_stride_d.size(), grad_zq.size(), g_stride_n.size(),
                        g_stride_d.size(), n.size()});
  SegArgs a{};
  a.nseg = static_cast<int>(nseg);
  I64 rb = 0, blocks = 0;
  for (std::size_t s = 0; s < nseg; ++s) {
    a.out[s] = static_cast<int>(s);
    a.pstart[s] = blocks;
    a.z[s] = reinterpret_cast<const void*>(z[s]);
    a.zsn[s] = z_stride_n[s];
    a.zsd[s] = z_stride_d[s];
    a.g[s] = reinterpret_cast<const void*>(grad_zq[s]);
    a.gsn[s] = g_stride_n[s];
    a.gsd[s] = g_stride_d[s];
    a.n[s] = n[s];
    a.row_base[s] = rb;
    rb += n[s];
    blocks += (n[s] + 7) / 8;
  }
  a.pstart[nseg] = blocks;
  if (blocks == 0) return;
  dispatch_float_types(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    vq_backward_rows_kernel<T><<<static_cast<unsigned>(blocks), dim3(32, 8), 0, as_stream(stream)>>>(
        a, reinterpret_cast<const T*>(codebook), cb_stride_k, cb_stride_d, static_cast<int>(d),
        reinterpret_cast<const I64*>(indices), reinterpret_cast<const float*>(grad_loss), static_cast<float>(beta),
        reinterpret_cast<T*>(grad_z_out), atomic ? reinterpret_cast<float*>(grad_cb32) : nullptr);
  });
  check_cuda(cudaGetLastError(), "vq backward rows launch");
}

void vq_codebook_grad_sorted(const std::vector<std::intptr_t>& z, const IVec& z_stride_n, const IVec& z_stride_d,
                             const IVec& n, std::intptr_t codebook, I64 cb_stride_k, I64 cb_stride_d, I64 codes,
                             I64 d, int dtype, std::intptr_t sorted_codes, std::intptr_t order,
                             std::intptr_t bounds, std::intptr_t grad_loss, std::intptr_t head, std::intptr_t tail,
                             std::intptr_t inner, std::intptr_t grad_cb, std::intptr_t stream) {
  const std::size_t nseg = z.size();
  check_segments(nseg, {z_stride_n.size(), z_stride_d.size(), n.size()});
  SegArgs a{};
  a.nseg = static_cast<int>(nseg);
  I64 total = 0;
  for (std::size_t s = 0; s < nseg; ++s) {
    a.z[s] = reinterpret_cast<const void*>(z[s]);
    a.zsn[s] = z_stride_n[s];
    a.zsd[s] = z_stride_d[s];
    a.n[s] = n[s];
    a.row_base[s] = total;
    total += n[s];
  }
  const unsigned dblocks = static_cast<unsigned>((d + 127) / 128);
  const I64 chunks = (total + kChunk - 1) / kChunk;
  cudaStream_t st = as_stream(stream);
  dispatch_float_types(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if (chunks > 0) {
      vq_segsum_chunks_kernel<T><<<dim3(static_cast<unsigned>(chunks), dblocks), 128, 0, st>>>(
          a, reinterpret_cast<const T*>(codebook), cb_stride_k, cb_stride_d, static_cast<int>(d), total,
          reinterpret_cast<const I64*>(sorted_codes), reinterpret_cast<const I64*>(order),
          reinterpret_cast<const float*>(grad_loss), reinterpret_cast<float*>(head), reinterpret_cast<float*>(tail),
          reinterpret_cast<float*>(inner));
      check_cuda(cudaGetLastError(), "vq segsum chunks launch");
    }
    vq_segsum_finish_kernel<T><<<dim3(static_cast<unsigned>(codes), dblocks), 128, 0, st>>>(
        reinterpret_cast<const I64*>(bounds), reinterpret_cast<const float*>(head),
        reinterpret_cast<const float*>(tail), reinterpret_cast<const float*>(inner), total, static_cast<int>(d),
        reinterpret_cast<T*>(grad_cb));
    check_cuda(cudaGetLastError(), "vq segsum finish launch");
  });
}

}  // namespace mcc
