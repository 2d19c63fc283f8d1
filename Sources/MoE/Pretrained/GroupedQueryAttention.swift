// GroupedQueryAttention with a KV cache: causal self-attention as the
// pretrained families run it (Ainslie et al. 2023; Notebooks/part5-pretrained.md, §4).
//
// Multi-head attention (the toy's, Layers/CausalSelfAttention.swift) gives
// every one of the H query heads its own key and value head. Grouped-query
// attention keeps H query heads but only G ≤ H key/value heads: query head h
// reads key/value head h / (H/G). G = H is ordinary multi-head attention,
// G = 1 is multi-query attention. Fewer k/v heads means a smaller KV cache,
// which is what limits long generations.
//
// Per new token at position p (x its normalised input [D]):
//
//     q = x·Wqᵀ (+bq)     [H·Dh]      k = x·Wkᵀ (+bk)   [G·Dh]     v = x·Wvᵀ (+bv)  [G·Dh]
//     olmoe: q ← RMSNorm(q), k ← RMSNorm(k) over the whole vector (QK-norm)
//     q, k ← RoPE(q, p), RoPE(k, p)
//     cache ← cache + (k, v)                                  keys, values [p+1, G·Dh]
//     aₕ = softmax_s( qₕ·k_{s, g(h)} · scale ),  s = 0 … p    causal: only the past and itself
//     oₕ = Σ_s aₕ[s] · v_{s, g(h)}                            [Dh]
//     y  = concat(o₀ … o_{H−1})·Woᵀ                           [D]
//
// scale is 1/√Dh, except Granite's attention_multiplier. The KV cache is why
// generating a token costs O(p) and not O(p²): keys and values of earlier
// positions never change (the model is causal), so they are computed once.
//
// Legend: T new tokens, D width, H query heads, G key/value heads, Dh head width, S cached positions.
import Foundation

/// The keys and values of every position seen so far, for one layer.
final class KVCache {
    var keys: [Float] = []     // [S, G·Dh], post-RoPE
    var values: [Float] = []   // [S, G·Dh]
    var count = 0              // S
}

struct GroupedQueryAttention {
    let config: PretrainedConfig
    let query: WeightTensor, key: WeightTensor, value: WeightTensor, output: WeightTensor   // [H·Dh, D], [G·Dh, D] ×2, [D, H·Dh]
    let queryBias: [Float]?, keyBias: [Float]?, valueBias: [Float]?                          // [H·Dh], [G·Dh] ×2
    let queryNorm: RMSNorm?, keyNorm: RMSNorm?                                                // olmoe: [H·Dh], [G·Dh]
    let rope: RotaryEmbedding

    /// x [T, D] (already normalised), tokens at positions cache.count … → y [T, D]; appends to the cache.
    func callAsFunction(_ x: [Float], tokens: Int, cache: KVCache) -> [Float] {
        let h = config.headCount, g = config.keyValueHeadCount, dh = config.headSize
        let qkv = PretrainedKernels.linear(x, tokens: tokens, [query, key, value],
                                           biases: [queryBias, keyBias, valueBias])       // one parallel region
        var q = qkv[0], k = qkv[1], v = qkv[2]                                           // [T, H·Dh], [T, G·Dh] ×2
        if let queryNorm, let keyNorm { q = queryNorm(q); k = keyNorm(k) }
        if let c = config.clipQKV {
            q = q.map { min(max($0, -c), c) }; k = k.map { min(max($0, -c), c) }; v = v.map { min(max($0, -c), c) }
        }
        let start = cache.count
        for t in 0..<tokens {
            rope.apply(&q, offset: t * h * dh, heads: h, position: start + t)
            rope.apply(&k, offset: t * g * dh, heads: g, position: start + t)
        }
        cache.keys += k
        cache.values += v
        cache.count += tokens

        // One (token, head) pair per task: each writes its own Dh outputs.
        var o = [Float](repeating: 0, count: tokens * h * dh)                          // [T, H·Dh]
        let group = h / g, scale = config.attentionMultiplier
        let keys = cache.keys, values = cache.values
        o.withUnsafeMutableBufferPointer { op in
            let out = op.baseAddress!
            Parallel.forEach(tokens * h) { task in
                let t = task / h, head = task % h, kv = head / group
                let visible = start + t + 1                      // causal: positions 0 … start+t
                var scores = [Float](repeating: 0, count: visible)
                var m = -Float.infinity
                for s in 0..<visible {
                    var dotProduct: Float = 0
                    for i in 0..<dh { dotProduct += q[(t * h + head) * dh + i] * keys[(s * g + kv) * dh + i] }
                    scores[s] = dotProduct * scale
                    m = max(m, scores[s])
                }
                var total: Float = 0
                for s in 0..<visible { scores[s] = exp(scores[s] - m); total += scores[s] }
                let row = out + (t * h + head) * dh
                for s in 0..<visible {
                    let a = scores[s] / total
                    for i in 0..<dh { row[i] += a * values[(s * g + kv) * dh + i] }
                }
            }
        }
        return PretrainedKernels.linear(o, tokens: tokens, output)                     // [T, D]
    }
}
