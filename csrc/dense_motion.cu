// Fused dense motion: the launchers (kernels in dense_motion_kernels.cuh, contract in
// dense_motion.h).
#include "common.h"
#include "dense_motion.h"
#include "dense_motion_kernels.cuh"

#include <stdexcept>
#include <string>
#include <type_traits>

namespace mcc {
namespace {

// ------------------------------------------------------------------------------ launch helpers
dim3 pixel_grid_dims(std::int64_t height, std::int64_t width, std::int64_t y, std::int64_t z, const char* what) {
  const std::int64_t blocks = (height * width + kThreads - 1) / kThreads;
  if (height * width > (std::int64_t{1} << 30) || y > 65535 || z > 65535) {
    throw std::invalid_argument(std::string(what) + ": sizes out of range (H*W <= 2^30, groups and batch <= 65535)");
  }
  return dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(y), static_cast<unsigned>(z));
}

template <typename T>
const T* cptr(std::intptr_t p) { return reinterpret_cast<const T*>(p); }
template <typename T>
T* mptr(std::intptr_t p) { return reinterpret_cast<T*>(p); }

}  // namespace

int dense_motion_block_pixels() { return kThreads; }

void keypoint_heatmaps_forward(std::intptr_t kp, std::int64_t batch, std::int64_t num_kp, std::int64_t height,
                               std::int64_t width, double variance, int out_dtype, std::intptr_t out,
                               std::intptr_t stream) {
  if (batch * num_kp * height * width == 0) return;
  const dim3 grid = pixel_grid_dims(height, width, num_kp, batch, "keypoint_heatmaps");
  dispatch_float_types(out_dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    keypoint_heatmaps_kernel<T><<<grid, kThreads, 0, as_stream(stream)>>>(
        cptr<float>(kp), mptr<T>(out), static_cast<int>(height), static_cast<int>(width), static_cast<int>(num_kp),
        static_cast<float>(variance));
  });
  check_cuda(cudaGetLastError(), "keypoint_heatmaps_forward launch");
}

void sparse_motions_forward(std::intptr_t kp_source, std::intptr_t kp_driving, std::intptr_t jac_source,
                            std::intptr_t jac_driving, bool has_jac, std::int64_t batch, std::int64_t num_kp,
                            std::int64_t height, std::int64_t width, int out_dtype, std::intptr_t out,
                            std::intptr_t stream) {
  if (batch * height * width == 0) return;
  const dim3 grid = pixel_grid_dims(height, width, num_kp + 1, batch, "sparse_motions");
  dispatch_float_types(out_dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    sparse_motions_kernel<T><<<grid, kThreads, 0, as_stream(stream)>>>(
        cptr<float>(kp_source), cptr<float>(kp_driving), cptr<float>(jac_source), cptr<float>(jac_driving), has_jac,
        mptr<T>(out), static_cast<int>(height), static_cast<int>(width), static_cast<int>(num_kp));
  });
  check_cuda(cudaGetLastError(), "sparse_motions_forward launch");
}

void dense_motion_input_forward(std::intptr_t source, std::int64_t stride_b, std::int64_t stride_c,
                                std::int64_t stride_h, std::int64_t stride_w, std::int64_t batch,
                                std::int64_t channels, std::int64_t height, std::int64_t width, int dtype,
                                std::intptr_t kp_source, std::intptr_t kp_driving, std::intptr_t jac_source,
                                std::intptr_t jac_driving, bool has_jac, std::int64_t num_kp, bool align_corners,
                                double variance, std::intptr_t out, std::intptr_t stream) {
  if (batch * height * width == 0) return;
  const dim3 grid = pixel_grid_dims(height, width, num_kp + 1, batch, "dense_motion_input");
  dispatch_float_types(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    dense_motion_input_fwd_kernel<T><<<grid, kThreads, 0, as_stream(stream)>>>(
        cptr<T>(source), stride_b, stride_c, stride_h, stride_w, cptr<float>(kp_source), cptr<float>(kp_driving),
        cptr<float>(jac_source), cptr<float>(jac_driving), has_jac, align_corners, mptr<T>(out),
        static_cast<int>(channels), static_cast<int>(height), static_cast<int>(width), static_cast<int>(num_kp),
        static_cast<float>(variance));
  });
  check_cuda(cudaGetLastError(), "dense_motion_input_forward launch");
}

void dense_motion_input_backward(std::intptr_t grad, std::intptr_t source, std::int64_t stride_b,
                                 std::int64_t stride_c, std::int64_t stride_h, std::int64_t stride_w,
                                 std::int64_t batch, std::int64_t channels, std::int64_t height, std::int64_t width,
                                 int dtype, std::intptr_t kp_source, std::intptr_t kp_driving,
                                 std::intptr_t jac_source, std::intptr_t jac_driving, bool has_jac,
                                 std::int64_t num_kp, bool align_corners, double variance, std::intptr_t source_grad,
                                 std::intptr_t partial, std::int64_t num_blocks, std::intptr_t stream) {
  if (batch * height * width == 0) return;
  const dim3 grid = pixel_grid_dims(height, width, num_kp + 1, batch, "dense_motion_input_backward");
  if (static_cast<std::int64_t>(grid.x) != num_blocks) {
    throw std::invalid_argument("dense_motion_input_backward: num_blocks must be ceil(H * W / block_pixels)");
  }
  dispatch_float_types(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    dense_motion_input_bwd_kernel<T><<<grid, kThreads, 0, as_stream(stream)>>>(
        cptr<T>(grad), cptr<T>(source), stride_b, stride_c, stride_h, stride_w, cptr<float>(kp_source),
        cptr<float>(kp_driving), cptr<float>(jac_source), cptr<float>(jac_driving), has_jac, align_corners,
        mptr<float>(source_grad), mptr<float>(partial), static_cast<int>(channels), static_cast<int>(height),
        static_cast<int>(width), static_cast<int>(num_kp), static_cast<int>(num_blocks),
        static_cast<float>(variance));
  });
  check_cuda(cudaGetLastError(), "dense_motion_input_backward launch");
}

void compose_flow_forward(std::intptr_t logits, std::int64_t stride_b, std::int64_t stride_c, std::int64_t stride_h,
                          std::int64_t stride_w, std::int64_t batch, std::int64_t groups, std::int64_t height,
                          std::int64_t width, int dtype, std::intptr_t kp_source, std::intptr_t kp_driving,
                          std::intptr_t jac_source, std::intptr_t jac_driving, bool has_jac, std::intptr_t flow,
                          std::intptr_t stats, std::intptr_t stream) {
  if (batch * height * width == 0) return;
  const dim3 grid = pixel_grid_dims(height, width, batch, 1, "compose_flow");
  dispatch_float_types(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    compose_flow_fwd_kernel<T><<<grid, kThreads, 0, as_stream(stream)>>>(
        cptr<T>(logits), stride_b, stride_c, stride_h, stride_w, cptr<float>(kp_source), cptr<float>(kp_driving),
        cptr<float>(jac_source), cptr<float>(jac_driving), has_jac, mptr<float>(flow), mptr<float>(stats),
        static_cast<int>(height), static_cast<int>(width), static_cast<int>(groups - 1));
  });
  check_cuda(cudaGetLastError(), "compose_flow_forward launch");
}

void compose_flow_backward(std::intptr_t grad, std::intptr_t logits, std::int64_t stride_b, std::int64_t stride_c,
                           std::int64_t stride_h, std::int64_t stride_w, std::intptr_t dlogits,
                           std::int64_t dstride_b, std::int64_t dstride_c, std::int64_t dstride_h,
                           std::int64_t dstride_w, std::int64_t batch, std::int64_t groups, std::int64_t height,
                           std::int64_t width, int dtype, std::intptr_t flow, std::intptr_t stats,
                           std::intptr_t kp_source, std::intptr_t kp_driving, std::intptr_t jac_source,
                           std::intptr_t jac_driving, bool has_jac, std::intptr_t partial, std::int64_t num_blocks,
                           std::intptr_t stream) {
  if (batch * height * width == 0) return;
  const dim3 grid = pixel_grid_dims(height, width, groups, batch, "compose_flow_backward");
  if (static_cast<std::int64_t>(grid.x) != num_blocks) {
    throw std::invalid_argument("compose_flow_backward: num_blocks must be ceil(H * W / block_pixels)");
  }
  dispatch_float_types(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    compose_flow_bwd_kernel<T><<<grid, kThreads, 0, as_stream(stream)>>>(
        cptr<float>(grad), cptr<T>(logits), stride_b, stride_c, stride_h, stride_w, mptr<T>(dlogits), dstride_b,
        dstride_c, dstride_h, dstride_w, cptr<float>(flow), cptr<float>(stats), cptr<float>(kp_source),
        cptr<float>(kp_driving), cptr<float>(jac_source), cptr<float>(jac_driving), has_jac, mptr<float>(partial),
        static_cast<int>(height), static_cast<int>(width), static_cast<int>(groups - 1),
        static_cast<int>(num_blocks));
  });
  check_cuda(cudaGetLastError(), "compose_flow_backward launch");
}

}  // namespace mcc
