// The grid-sample warping family: the launchers (kernels in warp_kernels.cuh; contract in warp.h).
#include "common.h"
#include "warp.h"
#include "warp_kernels.cuh"

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <type_traits>

namespace mcc {
namespace {

unsigned grid_for(std::int64_t total) {
  const std::int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::min<std::int64_t>(std::max<std::int64_t>(blocks, 1), INT_MAX));
}

}  // namespace

std::string kernel_image_error() {
  cudaFuncAttributes attr{};
  const cudaError_t err = cudaFuncGetAttributes(&attr, sample_forward_kernel<float, int>);
  if (err == cudaSuccess) return std::string();
  cudaGetLastError();  // not sticky: clear it so that later launches report their own errors
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

void sample_forward(std::intptr_t x, std::intptr_t flow, std::intptr_t occ, std::intptr_t out,
                    const SampleGeometry& g, int dtype, std::intptr_t stream) {
  const std::int64_t groups = (g.C + kChannelsPerThread - 1) / kChannelsPerThread;
  const std::int64_t total = g.B * g.M * g.Ho * g.Wo * groups;
  if (total == 0) return;
  const bool channel_fast = g.out_strides[2] == 1 && g.C > 1;
  dispatch_float_types(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    auto kernel = total < kIndex32Limit ? sample_forward_kernel<T, int> : sample_forward_kernel<T, I64>;
    kernel<<<grid_for(total), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const T*>(x), reinterpret_cast<const float*>(flow), reinterpret_cast<const float*>(occ),
        reinterpret_cast<T*>(out), g, groups, channel_fast);
  });
  check_cuda(cudaGetLastError(), "sample_forward launch");
}

void sample_backward(std::intptr_t grad_out, std::intptr_t x, std::intptr_t flow, std::intptr_t occ,
                     const SampleGeometry& g, std::intptr_t grad_x, std::array<std::int64_t, 4> gx_strides,
                     std::intptr_t grad_flow, std::intptr_t grad_occ, std::intptr_t keys, std::intptr_t weights,
                     int dtype, std::intptr_t stream) {
  const std::int64_t total = g.B * g.M * g.Ho * g.Wo;
  if (total == 0) return;
  if (grad_occ != 0 && g.M != 1) throw std::invalid_argument("sample_backward: grad_occ needs M == 1");
  dispatch_float_types(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    auto kernel = total < kIndex32Limit ? sample_backward_kernel<T, int> : sample_backward_kernel<T, I64>;
    kernel<<<grid_for(total), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const T*>(grad_out), reinterpret_cast<const T*>(x), reinterpret_cast<const float*>(flow),
        reinterpret_cast<const float*>(occ), g, reinterpret_cast<float*>(grad_x), gx_strides[0], gx_strides[1],
        gx_strides[2], gx_strides[3], reinterpret_cast<float*>(grad_flow), reinterpret_cast<float*>(grad_occ),
        reinterpret_cast<I64*>(keys), reinterpret_cast<float*>(weights));
  });
  check_cuda(cudaGetLastError(), "sample_backward launch");
}

void gather_input_grad(std::intptr_t bounds, std::intptr_t perm, std::intptr_t weights, int entries,
                       std::intptr_t grad_out, const SampleGeometry& g, std::intptr_t grad_x,
                       std::array<std::int64_t, 4> gx_strides, int dtype, std::intptr_t stream) {
  const std::int64_t total = g.B * g.H * g.W * g.C;
  if (total == 0) return;
  if (entries != 1 && entries != 4) throw std::invalid_argument("gather_input_grad: entries must be 1 or 4");
  const bool channel_fast = gx_strides[1] == 1 && g.C > 1;
  const bool narrow = total < kIndex32Limit && entries * g.B * g.M * g.Ho * g.Wo < kIndex32Limit;
  dispatch_float_types(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    auto kernel = narrow ? gather_input_grad_kernel<T, int> : gather_input_grad_kernel<T, I64>;
    kernel<<<grid_for(total), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const I64*>(bounds), reinterpret_cast<const I64*>(perm),
        reinterpret_cast<const float*>(weights), entries, reinterpret_cast<const T*>(grad_out), g,
        reinterpret_cast<T*>(grad_x), gx_strides[0], gx_strides[1], gx_strides[2], gx_strides[3], channel_fast);
  });
  check_cuda(cudaGetLastError(), "gather_input_grad launch");
}

void resize_backward_axis(std::intptr_t src, std::array<std::int64_t, 4> src_strides, std::intptr_t dst,
                          std::array<std::int64_t, 4> dst_strides, std::int64_t B, std::int64_t A, std::int64_t lo,
                          std::int64_t E, std::int64_t hi, float scale, float inv_scale, std::int64_t window,
                          bool align, std::intptr_t stream) {
  const std::int64_t total = B * A * lo * E;
  if (total == 0) return;
  auto kernel = total < kIndex32Limit ? resize_backward_axis_kernel<int> : resize_backward_axis_kernel<I64>;
  kernel<<<grid_for(total), kThreads, 0, as_stream(stream)>>>(
      reinterpret_cast<const float*>(src), src_strides[0], src_strides[1], src_strides[2], src_strides[3],
      reinterpret_cast<float*>(dst), dst_strides[0], dst_strides[1], dst_strides[2], dst_strides[3], B, A, lo, E,
      hi, scale, inv_scale, window, align);
  check_cuda(cudaGetLastError(), "resize_backward_axis launch");
}

}  // namespace mcc
