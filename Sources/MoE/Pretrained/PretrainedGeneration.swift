// PretrainedGeneration: turning next-token logits into text, one token at a time.
//
// Generation has two phases with very different costs (Notebooks/part5-pretrained.md, §6):
//
//   * prefill: the whole prompt [T] in one forward pass. Each weight matrix is
//     read once and used for T tokens, so it is compute-bound and fast per token.
//   * decode: one token per forward pass, reusing the KV cache. Each step
//     reads every active weight once for a single token, so it is bound by
//     memory bandwidth: tokens/s ≤ bandwidth / bytes of active weights.
//
// Choosing the next token from logits z [V]:
//   * temperature 0: greedy, argmax z (ties: the lower id, as torch.argmax);
//   * otherwise p = softmax(z / T), keep the smallest set of most likely tokens
//     whose probabilities sum to ≥ top-p (nucleus sampling, Holtzman et al. 2019),
//     renormalise, and draw from it with a seeded generator, so a run repeats.
//
// Legend: V vocabulary, T prompt tokens.
import Foundation

public struct SamplingSettings {
    public var temperature: Float
    public var topP: Float
    public var seed: UInt64
    public init(temperature: Float = 0, topP: Float = 1, seed: UInt64 = 0) {
        self.temperature = temperature; self.topP = topP; self.seed = seed
    }
}

public struct TokenSampler {
    let settings: SamplingSettings
    var rng: Xoshiro256

    public init(_ settings: SamplingSettings) {
        self.settings = settings
        rng = Xoshiro256(seed: settings.seed)
    }

    /// The next token from logits [V].
    public mutating func next(_ logits: [Float]) -> Int {
        if settings.temperature <= 0 {
            var best = 0
            for i in 1..<logits.count where logits[i] > logits[best] { best = i }
            return best
        }
        let m = logits.max() ?? 0
        var p = logits.map { exp(($0 - m) / settings.temperature) }                 // [V], unnormalised
        let total = p.reduce(0, +)
        for i in 0..<p.count { p[i] /= total }
        let order = p.indices.sorted { p[$0] > p[$1] || (p[$0] == p[$1] && $0 < $1) }
        var kept: [Int] = [], mass: Float = 0
        for i in order {
            kept.append(i); mass += p[i]
            if mass >= settings.topP { break }
        }
        var u = rng.uniform() * mass
        for i in kept {
            u -= p[i]
            if u <= 0 { return i }
        }
        return kept.last!
    }
}

extension PretrainedModel {
    /// Greedy continuation of `prompt` by `count` tokens, using the KV cache
    /// (one prefill, then one token per step). Starts a new sequence.
    public func greedy(_ prompt: [Int], count: Int) throws -> [Int] {
        reset()
        var sampler = TokenSampler(SamplingSettings())
        var out: [Int] = []
        var logits = try forward(prompt, lastOnly: true).logits
        for step in 0..<count {
            let next = sampler.next(logits)
            out.append(next)
            if step + 1 < count { logits = try forward([next], lastOnly: true).logits }
        }
        return out
    }
}
