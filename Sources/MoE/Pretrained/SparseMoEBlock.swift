// SparseMoEBlock: the mixture-of-experts feed-forward of a pretrained layer,
// routed by the library's own TopKGating (MoE/TopKGating.swift) — the router
// the toys train with, set the way each family was trained.
//
//     logits  = x·Wrᵀ                              [T, E]   the router ("gate") weights
//     routing = TopKGating(E, K, renormalize, order).route(logits)
//                                                  experts [T, K] best first, weights w [T, K]
//     y_t     = Σ_j w[t, j] · expert_{e[t, j]}(x_t)            [T, D]
//     qwen2_moe: y_t += σ(x_t·w_sᵀ) · shared(x_t)               the shared expert, always on
//
// The four families in TopKGating's terms (Notebooks/part5-pretrained.md, §5):
//
//     mixtral     order .softmaxThenTopK, renormalize true   (w = p[chosen] / Σ p[chosen])
//     olmoe       order .softmaxThenTopK, renormalize false  (w = p[chosen]: sums to < 1)
//     qwen2_moe   order .softmaxThenTopK, renormalize = norm_topk_prob (false in the releases)
//     granitemoe  order .topKThenSoftmax                      (softmax over the K chosen logits)
//
// The router runs in evaluation mode (RoutingContext(training: false)): no
// expert dropout, no temperature, no capacity. Tokens are then grouped by
// expert, so that each expert's weights are streamed once per forward pass
// however many tokens chose it (prefill), and the outputs are scattered back
// with their weights.
//
// Legend: T tokens, D width, E experts, K experts per token, F expert width.
import Foundation

struct SparseMoEBlock {
    let router: WeightTensor              // [E, D]
    let experts: [SwiGLUExpert]           // E
    let gating: TopKGating
    let shared: SwiGLUExpert?             // qwen2_moe: width shared_expert_intermediate_size
    let sharedGate: WeightTensor?         // qwen2_moe: [1, D]

    /// x [T, D] → (y [T, D], router logits [T, E], chosen experts [T, K] best first,
    /// the router's whole decision: experts and combine weights [T, K], as `route` shows them)
    func callAsFunction(_ x: [Float], tokens: Int) -> (output: [Float], logits: [Float], experts: [Int], routing: Routing) {
        let d = router.shape[1], e = router.shape[0]
        let logits = PretrainedKernels.linear(x, tokens: tokens, router)                          // [T, E]
        let routing = gating.route(logits: Tensor(shape: [tokens, e], data: logits),
                                   context: RoutingContext(training: false))
        let k = routing.k
        var y = [Float](repeating: 0, count: tokens * d)
        // Which (token, slot) pairs each expert serves.
        var assigned = [[(token: Int, slot: Int)]](repeating: [], count: e)
        for t in 0..<tokens { for j in 0..<k { assigned[routing.experts[t * k + j]].append((t, j)) } }
        // The chosen experts run side by side, each on one thread with its three
        // products there: at decode time (one token, 8 experts) that is one
        // parallel region per layer instead of 24 small ones, and each region costs
        // a sleeping core's wake-up (tens of µs on the 2-vCPU guest of README
        // "Speed"). An expert computes the same numbers on one thread as on many.
        let active = (0..<e).filter { !assigned[$0].isEmpty }
        var outputs = [[Float]](repeating: [], count: active.count)                             // [n, D] each
        outputs.withUnsafeMutableBufferPointer { slots in
            Parallel.forEach(costs: active.map { assigned[$0].count }) { a in
                let rows = assigned[active[a]]
                var gathered = [Float](repeating: 0, count: rows.count * d)                        // [n, D]
                for (r, item) in rows.enumerated() {
                    for i in 0..<d { gathered[r * d + i] = x[item.token * d + i] }
                }
                slots[a] = experts[active[a]](gathered, tokens: rows.count, threads: 1)
            }
        }
        // Combined in expert order, one expert after another: the order of the
        // additions into y does not depend on which thread ran which expert.
        for (a, expert) in active.enumerated() {
            let out = outputs[a]
            for (r, item) in assigned[expert].enumerated() {
                let w = routing.weights.data[item.token * k + item.slot]
                for i in 0..<d { y[item.token * d + i] += w * out[r * d + i] }
            }
        }
        if let shared, let sharedGate {
            let s = shared(x, tokens: tokens)                                                       // [T, D]
            let gateLogit = PretrainedKernels.linear(x, tokens: tokens, sharedGate)                // [T, 1]
            for t in 0..<tokens {
                let g = 1 / (1 + exp(-gateLogit[t]))
                for i in 0..<d { y[t * d + i] += g * s[t * d + i] }
            }
        }
        return (y, logits, routing.experts, routing)
    }
}
