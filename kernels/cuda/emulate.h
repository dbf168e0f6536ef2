// emulate.h: run the CUDA C kernels of this folder on a CPU, with g++ -std=c++20.
//
// A lesson in how a launch maps onto data. A kernel launch <<<grid, block>>> starts
// grid.x*grid.y*grid.z blocks of block.x*block.y*block.z threads, and every thread runs the
// same function body; the only thing that tells the threads apart is where they sit:
// blockIdx (which block) and threadIdx (which thread inside it), with gridDim and blockDim
// giving the sizes. A kernel turns those four into the index of the data it owns.
//
// This header gives a .cu file exactly those names and runs a launch like this:
// - the blocks run one after another (a GPU runs them in any order, so a correct kernel
//   never depends on the order, and running them in sequence is one valid schedule);
// - the threads of a block are real std::threads, so __syncthreads() must really be
//   reached by all of them, and a missing barrier shows up as a wrong answer or a hang;
// - __shared__ becomes `static`: one copy of the variable per kernel instantiation, shared
//   by every thread of the process. Because a single block runs at a time (and launches are
//   serialised), that one copy is precisely "the memory of the block now running". Not
//   thread_local: then each thread would have its own copy, which is a register, not
//   shared memory. Its contents survive from block to block, where a GPU gives garbage;
//   a kernel must not read shared memory before writing it in either case;
// - __syncthreads() is a barrier with a timeout: if some threads of a block never arrive
//   (a barrier inside a branch not all threads take), the launch fails with a message
//   instead of hanging;
// - a warp is 32 consecutive threads; __shfl_down_sync / __shfl_xor_sync pass values through
//   an exchange buffer of one slot per thread, with a warp barrier before and after reading;
// - atomicAdd works through std::atomic_ref; __umulhi is the high half of a 64-bit product;
// - a launch may run only some of its blocks (`only`, a list of block coordinates): the
//   others are skipped, as if their outputs were not looked at. Tests at real ResNet sizes
//   use this to run the few blocks whose outputs they check;
// - denormals: the GPU kernels are compiled with -ftz=false (kernels/cuda_build.py), so every
//   emulated thread clears the x86 flush-to-zero and denormals-are-zero bits of MXCSR
//   (whatever a library loaded into the process set); compiled with -DEMU_FTZ=1 it sets
//   them instead, imitating -ftz=true (for float and, unlike a GPU, for double too).
//
// Use: g++ -std=c++20 -pthread -include emulate.h file.cu, then call emu::launch(grid,
// block, timeout_ms, error, error_len, [&] { kernel<float>(args...); }, only, count) from
// the host code (only = nullptr: every block).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

using std::isnan;
using std::max;
using std::min;
using std::sqrt;

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

// The four built-in variables. Each thread has its own threadIdx and blockIdx; the sizes
// are the same for every thread of a launch.
inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

namespace emu {

// Thrown out of a barrier when a block is stuck; ends the launch with its message.
struct Deadlock : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Barriers and the warp exchange buffer of the block now running.
class Block {
public:
    Block(unsigned threads, int timeout_ms)
        : threads_(threads), timeout_(timeout_ms), slots_(threads), warp_(threads_ / 32 + 1) {
        for (unsigned w = 0; w < warp_.size(); ++w)
            warp_[w].expected = std::min(32u, threads_ > 32 * w ? threads_ - 32 * w : 0u);
        all_.expected = done_.expected = threads_;
    }

    void syncthreads() { wait(all_, "__syncthreads()"); }
    void block_done() { wait(done_, "the end of the block (a thread returned early?)"); }
    void syncwarp(unsigned tid) { wait(warp_[tid / 32], "a warp shuffle or __syncwarp()"); }

    // Give value to the exchange, wait for the warp, read lane src's value (or our own if
    // src lies outside the block), wait again so that no slot is overwritten too early.
    template <typename T>
    T exchange(unsigned tid, T value, unsigned src) {
        static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
        std::memcpy(slots_[tid].bytes, &value, sizeof(T));
        syncwarp(tid);
        T out = value;
        if (src < threads_) std::memcpy(&out, slots_[src].bytes, sizeof(T));
        syncwarp(tid);
        return out;
    }

    void fail(const std::string& message) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (error_.empty()) error_ = message;
        broken_ = true;
        wake_all();
    }

    std::string error() {
        std::lock_guard<std::mutex> lock(mutex_);
        return error_;
    }

private:
    // One barrier: its own condition variable, so that a warp's barrier wakes only the
    // threads of that warp (one shared variable would wake every thread of the block).
    struct Counter {
        unsigned expected = 0, arrived = 0;
        unsigned long long generation = 0;
        std::condition_variable changed;
    };
    struct Slot {
        alignas(8) unsigned char bytes[8];
    };

    void wait(Counter& c, const char* where) {
        std::unique_lock<std::mutex> lock(mutex_);
        if (broken_) throw Deadlock(error_);
        unsigned long long generation = c.generation;
        if (++c.arrived == c.expected) {
            c.arrived = 0;
            ++c.generation;
            c.changed.notify_all();
            return;
        }
        auto released = [&] { return broken_ || c.generation != generation; };
        if (!c.changed.wait_for(lock, timeout_, released)) {
            error_ = "deadlock in block (" + std::to_string(blockIdx.x) + "," +
                     std::to_string(blockIdx.y) + "," + std::to_string(blockIdx.z) + "): " +
                     std::to_string(c.arrived) + " of " + std::to_string(c.expected) +
                     " threads waited at " + where + " for " + std::to_string(timeout_.count()) +
                     " ms; the others never arrived";
            broken_ = true;
            wake_all();
        }
        if (broken_) throw Deadlock(error_);
    }

    void wake_all() {
        for (auto& w : warp_) w.changed.notify_all();
        all_.changed.notify_all();
        done_.changed.notify_all();
    }

    unsigned threads_;
    std::chrono::milliseconds timeout_;
    std::vector<Slot> slots_;
    std::vector<Counter> warp_;
    Counter all_, done_;
    std::mutex mutex_;
    bool broken_ = false;
    std::string error_;
};

inline Block* current = nullptr;  // the block now running (one launch at a time)
inline std::mutex launch_mutex;   // serialises launches: __shared__ statics are global

// Denormal handling of the calling thread: kept (as -ftz=false) unless EMU_FTZ is set.
inline void set_denormal_mode() {
#if defined(__SSE__) || defined(__x86_64__)
    constexpr unsigned flush = 0x8040;  // MXCSR FTZ (bit 15) | DAZ (bit 6)
#if defined(EMU_FTZ) && EMU_FTZ
    _mm_setcsr(_mm_getcsr() | flush);
#else
    _mm_setcsr(_mm_getcsr() & ~flush);
#endif
#endif
}

inline unsigned thread_rank() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

// The coordinates of block b of a grid, x fastest.
inline dim3 block_at(unsigned long long b, dim3 grid) {
    return {unsigned(b % grid.x), unsigned(b / grid.x % grid.y),
            unsigned(b / (1ull * grid.x * grid.y))};
}

// Run kernel() on every thread of every block, or of the `count` blocks whose coordinates
// are only[3*i], only[3*i + 1], only[3*i + 2]; 0 on success, else 1 and a message in error.
template <typename Kernel>
int launch(dim3 grid, dim3 block, int timeout_ms, char* error, int error_len, Kernel kernel,
           const unsigned* only = nullptr, unsigned long long count = 0) {
    std::lock_guard<std::mutex> serial(launch_mutex);
    unsigned threads = block.x * block.y * block.z;
    unsigned long long blocks = only ? count : 1ull * grid.x * grid.y * grid.z;
    Block state(threads, timeout_ms);
    current = &state;
    gridDim = grid;
    blockDim = block;
    auto worker = [&](unsigned rank) {
        threadIdx = {rank % block.x, rank / block.x % block.y, rank / (block.x * block.y)};
        set_denormal_mode();
        try {
            for (unsigned long long b = 0; b < blocks; ++b) {
                blockIdx = only ? dim3{only[3 * b], only[3 * b + 1], only[3 * b + 2]}
                                : block_at(b, grid);
                kernel();
                state.block_done();  // no thread starts block b+1 before all finish b
            }
        } catch (const Deadlock&) {
        } catch (const std::exception& e) {
            state.fail(e.what());
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; ++t) pool.emplace_back(worker, t);
    for (auto& t : pool) t.join();
    current = nullptr;
    std::string message = state.error();
    if (message.empty()) return 0;
    std::snprintf(error, static_cast<size_t>(error_len), "%s", message.c_str());
    return 1;
}

}  // namespace emu

inline void __syncthreads() { emu::current->syncthreads(); }

inline void __syncwarp(unsigned = 0xffffffffu) { emu::current->syncwarp(emu::thread_rank()); }

// Lane l reads lane l + delta of its width-sized segment (its own value past the end).
template <typename T>
T __shfl_down_sync(unsigned, T value, unsigned delta, int width = 32) {
    unsigned tid = emu::thread_rank(), lane = tid % 32 % width;
    unsigned src = lane + delta < unsigned(width) ? tid + delta : tid;
    return emu::current->exchange(tid, value, src);
}

// Lane l reads lane l ^ mask (its own value if that leaves its width-sized segment).
template <typename T>
T __shfl_xor_sync(unsigned, T value, int mask, int width = 32) {
    unsigned tid = emu::thread_rank(), lane = tid % 32 % width;
    unsigned other = lane ^ unsigned(mask);
    unsigned src = other < unsigned(width) ? tid - lane + other : tid;
    return emu::current->exchange(tid, value, src);
}

template <typename T>
T atomicAdd(T* address, T value) {
    return std::atomic_ref<T>(*address).fetch_add(value);
}

inline unsigned __umulhi(unsigned a, unsigned b) {
    return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
