// SwiGLUExpert: the feed-forward network inside each expert of these models
// (Shazeer 2020, "GLU Variants Improve Transformer").
//
// The toy's expert (MoE/Expert.swift) is Linear → GELU → Linear. These
// checkpoints use a gated form with three matrices:
//
//     gate = x·Wgᵀ                    [T, F]
//     up   = x·Wuᵀ                    [T, F]
//     h    = silu(gate) ⊙ up          [T, F]     silu(z) = z·σ(z)
//     y    = h·Wdᵀ                    [T, D]
//
// The gate decides, per hidden unit, how much of `up` passes. Checkpoints
// store the matrices in two ways: one tensor per matrix per expert
// (mixtral's w1/w3/w2, olmoe's and qwen's gate_proj/up_proj/down_proj), or
// fused across experts (granite's input_linear [E, 2F, D], whose first F rows
// of each expert are the gate and the next F the up projection, and
// output_linear [E, D, F]). Both become the same three views here; nothing
// is copied. Notebooks/part5-pretrained.md, §5.
//
// Legend: T tokens, D width, F expert width, E experts.
import Foundation

struct SwiGLUExpert {
    let gate: WeightTensor   // [F, D]
    let up: WeightTensor     // [F, D]
    let down: WeightTensor   // [D, F]

    /// x [T, D] → y [T, D], the products on up to `threads` threads.
    func callAsFunction(_ x: [Float], tokens: Int, threads: Int = Parallel.threads) -> [Float] {
        let g = PretrainedKernels.linear(x, tokens: tokens, gate, threads: threads)   // [T, F]
        var u = PretrainedKernels.linear(x, tokens: tokens, up, threads: threads)     // [T, F]
        for i in 0..<u.count { u[i] *= g[i] / (1 + exp(-g[i])) }                      // silu(gate) ⊙ up
        return PretrainedKernels.linear(u, tokens: tokens, down, threads: threads)   // [T, D]
    }
}
