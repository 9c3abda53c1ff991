// Host emulation of the CUDA features csrc/'s kernels use, for running them on a CPU in tests
// (tests/cuda_emulation.py). A block runs as blockDim real threads: __syncthreads is a
// barrier of the block, warp shuffles exchange through a per-warp buffer between two barriers
// of the warp, __shared__ arrays are static (blocks run one after another), atomics are
// std::atomic_ref. A thread that returns leaves the block's and its warp's barriers, as an
// exited GPU thread does; a launch that does not finish in 300 s ($MCC_EMU_TIMEOUT_S) aborts
// the process with a message rather than hanging the test run. Not emulated: memory-ordering
// races between blocks, GPU-only rounding of the math functions (the host libm), timing.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

struct EmuDim3 {
  unsigned x = 1, y = 1, z = 1;
};

inline thread_local EmuDim3 threadIdx, blockIdx;
inline EmuDim3 blockDim, gridDim;  // one launch at a time

namespace emu {

struct Block {
  explicit Block(unsigned n) : sync(n), words(n) {
    for (unsigned w = 0; w * 32 < n; ++w) warps.push_back(std::make_unique<std::barrier<>>(std::min(32u, n - w * 32)));
  }
  std::barrier<> sync;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<std::uint32_t> words;  // one shuffle slot per thread
};

inline thread_local Block* block = nullptr;
inline thread_local unsigned linear = 0;  // thread index within the block

template <typename T>
T exchange(T v, unsigned src_lane) {
  static_assert(sizeof(T) == 4, "32-bit shuffles only");
  const unsigned warp = linear / 32;
  std::uint32_t bits;
  std::memcpy(&bits, &v, 4);
  block->words[linear] = bits;
  block->warps[warp]->arrive_and_wait();
  bits = block->words[warp * 32 + src_lane];
  block->warps[warp]->arrive_and_wait();
  T out;
  std::memcpy(&out, &bits, 4);
  return out;
}

// Runs kernel() once per thread of every block of the grid: blockDim threads walk the blocks
// in order, all finishing one block before any starts the next (the static __shared__ arrays
// are reused).
template <typename F>
void launch(EmuDim3 grid, EmuDim3 dims, F&& kernel) {
  gridDim = grid;
  blockDim = dims;
  const unsigned n = dims.x * dims.y * dims.z;
  const unsigned long long nblocks = 1ull * grid.x * grid.y * grid.z;
  std::vector<std::unique_ptr<Block>> blocks;
  for (unsigned long long b = 0; b < nblocks; ++b) blocks.push_back(std::make_unique<Block>(n));
  std::barrier<> step(n);
  // A kernel whose threads wait at different barriers would hang the test run: give up loudly.
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lock(m);
    const char* env = std::getenv("MCC_EMU_TIMEOUT_S");
    const int seconds = env != nullptr ? std::atoi(env) : 300;
    if (!cv.wait_for(lock, std::chrono::seconds(seconds), [&] { return done; })) {
      std::fprintf(stderr, "cuda emulation: a launch of %llu blocks x %u threads did not finish in %d s "
                           "(divergent __syncthreads or shuffle?)\n", nblocks, n, seconds);
      std::abort();
    }
  });
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (unsigned t = 0; t < n; ++t) {
    threads.emplace_back([&, t] {
      threadIdx = {t % dims.x, (t / dims.x) % dims.y, t / (dims.x * dims.y)};
      linear = t;
      for (unsigned long long b = 0; b < nblocks; ++b) {
        blockIdx = {static_cast<unsigned>(b % grid.x), static_cast<unsigned>((b / grid.x) % grid.y),
                    static_cast<unsigned>(b / (1ull * grid.x * grid.y))};
        block = blocks[b].get();
        kernel();
        block->sync.arrive_and_drop();
        block->warps[t / 32]->arrive_and_drop();
        step.arrive_and_wait();
      }
    });
  }
  for (auto& th : threads) th.join();
  {
    std::lock_guard<std::mutex> lock(m);
    done = true;
  }
  cv.notify_one();
  watchdog.join();
}

}  // namespace emu

inline void __syncthreads() { emu::block->sync.arrive_and_wait(); }

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask, int width = 32) {
  const unsigned lane = emu::linear % 32;
  unsigned src = lane ^ static_cast<unsigned>(lane_mask);
  if (src / width != lane / width) src = lane;
  return emu::exchange(v, src);
}

template <typename T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  const unsigned lane = emu::linear % 32;
  unsigned src = lane + delta;
  if (src / width != lane / width) src = lane;  // past the segment: own value, as on the GPU
  return emu::exchange(v, src);
}

inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }

inline float __int_as_float(int v) {
  float f;
  std::memcpy(&f, &v, 4);
  return f;
}

using std::isfinite;
