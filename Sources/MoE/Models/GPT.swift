// GPT: a small decoder-only transformer language model, GPT-2's shape.
//
//     x      = embedding(tokens)           [B, T, C]   token row + position row
//     x      = block_l(x), l = 0..<L       [B, T, C]   attention + feed-forward, pre-LN
//     x      = lnF(x)                      [B, T, C]   a final LayerNorm
//     logits = x · W_headᵀ                 [N, V]      a score per vocabulary entry
//     loss   = mean cross-entropy(logits[b, t], token[b, t+1]) + Σ_MoE α·aux
//
// Every position predicts the *next* token, so one sequence of T tokens gives T
// training examples at once; the causal mask in attention keeps each from
// seeing its answer. Which blocks have an MoE feed-forward instead of the
// dense MLP is a setting (`moeLayers`); nothing else changes between the two.
//
// Weight tying (GPT-2, Press & Wolf 2017): the head can reuse the token
// embedding table as W_head, so "which row is this token" and "how much does
// this vector look like that token" share one matrix. The table then receives
// gradient from both ends, added into one `grad` (the backward convention of
// Layer.swift makes this free). Derivations: Notebooks/part4-gpt.md, §1 and §6.
//
// Legend: B sequences, T positions (≤ contextLength), N = B·T, C width,
// V vocabulary, L blocks, E experts, K experts per token, H MLP hidden width.
import Foundation

/// The shape of a GPT. Defaults are a tiny model for tests; `gpt-moe` sets its own.
public struct GPTConfig: Equatable {
    public var vocabularySize = 65
    /// T_max, the longest sequence the position table covers.
    public var contextLength = 32
    public var layers = 2
    public var width = 32
    public var heads = 4
    /// Hidden width of the dense MLP and of each expert: 4·C in GPT-2.
    public var hidden = 128
    /// Blocks (0-based) whose feed-forward is an MoE layer; the rest are dense.
    public var moeLayers: [Int] = []
    public var experts = 8
    /// How every MoE layer routes and balances: the router, k, the balancing
    /// methods and their weights, a temperature schedule, a capacity, shared
    /// experts (RoutingSetup.swift; the same settings mnist-moe uses).
    public var routing = RoutingSetup.gptDefault
    /// Seed of the routers' own random draws (noise, expert dropout); layer l uses seed + l.
    public var routerSeed: UInt64 = 0
    /// Use the token embedding table as the output head.
    public var tieWeights = true

    public init() {}

    /// The routing the MoE layers are built with: `routing`, except that a
    /// top-1 softmax router never renormalises. With k = 1 the renormalised
    /// weight is p/p = 1 whatever the router says, its gradient is exactly 0,
    /// and the router would learn from the balancing loss alone, never from the
    /// task; unrenormalised, it is Switch's gate, y = p·Expert(x)
    /// (Notebooks/part4-gpt.md, §5).
    public var layerRouting: RoutingSetup {
        var r = routing
        if r.router == "topk" && r.k == 1 { r.renormalize = false }
        return r
    }

    /// Experts per token in an MoE layer (1 for the Switch router).
    public var topK: Int { routing.router == "switch" ? 1 : routing.k }

    /// "Every other layer", the notes' placement: blocks 1, 3, 5, …
    public static func everyOtherLayer(of layers: Int) -> [Int] { Array(stride(from: 1, to: layers, by: 2)) }
}

/// The language model: embedding, `TransformerBlock`s, final LayerNorm, head.
public final class GPT {
    public let config: GPTConfig
    public let embedding: Embedding
    public let blocks: [TransformerBlock]
    public let finalNorm: LayerNorm
    /// W_head [V, C]: the embedding's token table when tied, else a weight of its own.
    public let headWeight: Parameter
    private var final = Tensor.zeros([0, 0])   // lnF output [N, C], cached for the head's backward
    private var shape: [Int] = []              // [B, T, C] of the last forward

    public init(config: GPTConfig, rng: inout Xoshiro256) {
        precondition(config.layers >= 1, "GPT: needs at least one layer, got \(config.layers)")
        precondition(config.moeLayers.allSatisfy { (0..<config.layers).contains($0) },
                     "GPT: MoE layers \(config.moeLayers) outside 0..<\(config.layers)")
        self.config = config
        embedding = Embedding(vocabularySize: config.vocabularySize, contextLength: config.contextLength,
                              width: config.width, rng: &rng)
        var list: [TransformerBlock] = []
        for l in 0..<config.layers {
            let ffn: FeedForward
            if config.moeLayers.contains(l) {
                ffn = config.layerRouting.makeLayer(modelDim: config.width, hiddenDim: config.hidden,
                                                    experts: config.experts, activation: .gelu,
                                                    seed: config.routerSeed &+ UInt64(l), rng: &rng)
            } else {
                ffn = Expert(modelDim: config.width, hiddenDim: config.hidden, activation: .gelu, rng: &rng)
            }
            list.append(TransformerBlock(width: config.width, heads: config.heads, feedForward: ffn, rng: &rng))
        }
        blocks = list
        finalNorm = LayerNorm(width: config.width)
        headWeight = config.tieWeights ? embedding.tokenTable
            : Parameter(.normal([config.vocabularySize, config.width], std: 0.02, rng: &rng))
    }

    /// The MoE layers, with their block index.
    public var moeLayers: [(layer: Int, moe: MoELayer)] {
        blocks.enumerated().compactMap { i, b in (b.feedForward as? MoELayer).map { (i, $0) } }
    }

    /// Every trainable tensor once, under nanoGPT-like names ("blocks.1.moe.experts.3.net.0.weight").
    /// A tied head adds no entry: its weight is "embedding.token".
    public var namedParameters: [(name: String, parameter: Parameter)] {
        var list = prefixed("embedding", embedding.namedParameters)
        for (i, block) in blocks.enumerated() { list += prefixed("blocks.\(i)", block.namedParameters) }
        list += prefixed("final_norm", finalNorm.namedParameters)
        if !config.tieWeights { list.append(("head.weight", headWeight)) }
        return list
    }

    public var parameters: [Parameter] { namedParameters.map(\.parameter) }
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.value.count } }
    public func zeroGrad() { for p in parameters { p.zeroGrad() } }

    /// Parameters one token uses: everything but the experts it is not routed to.
    public var activeParameterCount: Int {
        parameterCount - blocks.reduce(0) { $0 + $1.feedForward.parameterCount - $1.feedForward.activeParameterCount }
    }

    /// Σ over MoE layers of α·aux from the last forward (0 for a dense model).
    public var weightedAuxiliaryLoss: Double {
        blocks.reduce(0) { $0 + $1.feedForward.weightedAuxiliaryLoss }
    }

    /// Training (router noise and expert dropout on) or evaluation, and how far
    /// training has got (0 → 1) for schedules such as the router temperature.
    public func setMode(training: Bool, progress: Double) {
        for (_, moe) in moeLayers { moe.training = training; moe.progress = progress }
    }

    /// After an optimiser step: balancing methods that adjust themselves (the
    /// auxiliary-loss-free bias) look at the step's routing.
    public func afterStep() { for (_, moe) in moeLayers { moe.afterStep() } }

    /// Routing state that is not a weight (the auxiliary-loss-free bias), named
    /// like the parameters: "blocks.1.moe.balancing.0.bias".
    public var namedBuffers: [(name: String, value: Tensor)] {
        moeLayers.flatMap { l, moe in moe.namedBuffers.map { (name: "blocks.\(l).moe." + $0.name, value: $0.value) } }
    }

    /// Restores a buffer saved under a `namedBuffers` name.
    public func restoreBuffer(named name: String, value: Tensor) throws {
        for (l, moe) in moeLayers where name.hasPrefix("blocks.\(l).moe.") {
            try moe.restoreBuffer(named: String(name.dropFirst("blocks.\(l).moe.".count)), value: value)
        }
    }

    /// tokens [B·T] -> logits [B·T, V]. Row b·T + t scores the token after tokens[b·T + t].
    public func forward(tokens: [Int], batch: Int) -> Tensor {
        var x = embedding.forward(tokens: tokens, batch: batch)        // [B, T, C]
        for block in blocks { x = block.forward(x) }                   // [B, T, C]
        shape = x.shape
        final = finalNorm.forward(x).reshaped([shape[0] * shape[1], shape[2]])   // [N, C]
        return matmul(final, headWeight.value, transposeB: true)       // [N, C]·[C, V] -> [N, V]
    }

    /// From dL/dlogits [N, V], adds every parameter's gradient (the MoE layers add
    /// α·∂aux themselves). In the forward pass logits = x·Wᵀ, so dW += dlogitsᵀ·x
    /// and dx = dlogits·W; then back through lnF, the blocks last to first, and
    /// the embedding.
    public func backward(_ dLogits: Tensor) {
        precondition(dLogits.shape == [final.shape[0], config.vocabularySize],
                     "GPT.backward: dlogits has shape \(dLogits.shape), expected [\(final.shape[0]), \(config.vocabularySize)]")
        // dW [V, C] += dlogitsᵀ·x and dx [N, C] = dlogits·W, side by side when large (Linear.swift).
        let dx = Linear.inputGradientAndWeightGradient(dLogits, input: final, weight: headWeight, threads: Parallel.threads)
        var g = finalNorm.backward(dx.reshaped(shape))                                // [B, T, C]
        for block in blocks.reversed() { g = block.backward(g) }
        embedding.backward(g)
    }

    /// Mean next-token cross-entropy of `logits` against `targets` [N], in nats per
    /// token, and its gradient dL/dlogits. The auxiliary loss is not included.
    public static func crossEntropy(logits: Tensor, targets: [Int]) -> SoftmaxCrossEntropy.Result {
        SoftmaxCrossEntropy.compute(logits: logits, labels: targets)
    }

    /// Mean cross-entropy on one batch without touching gradients (evaluation).
    public func loss(tokens: [Int], targets: [Int], batch: Int) -> Double {
        GPT.crossEntropy(logits: forward(tokens: tokens, batch: batch), targets: targets).loss
    }

    /// Continues `prompt` by `count` tokens, sampling each from the model's
    /// distribution over the next token: logits / temperature, restricted to the
    /// `topK` most likely (0: all of them). Only the last `contextLength` tokens
    /// are fed back in. Temperature 0 takes the most likely token. An empty prompt
    /// starts from token 0.
    /// - Complexity: `count` forward passes of at most T tokens.
    public func generate(prompt: [Int], count: Int, temperature: Float = 1, topK: Int = 0,
                         rng: inout Xoshiro256) -> [Int] {
        setMode(training: false, progress: 1)   // no router noise, no expert dropout
        var tokens = prompt.isEmpty ? [0] : prompt
        let v = config.vocabularySize
        for _ in 0..<count {
            let window = Array(tokens.suffix(config.contextLength))
            let logits = forward(tokens: window, batch: 1)
            let last = Array(logits.data[((window.count - 1) * v)..<(window.count * v)])
            tokens.append(GPT.sample(logits: last, temperature: temperature, topK: topK, rng: &rng))
        }
        for (_, moe) in moeLayers { moe.resetStatistics() }   // sampling is not part of any statistic
        return Array(tokens.suffix(count))
    }

    /// One draw from softmax(logits / temperature) over the `topK` largest logits.
    public static func sample(logits: [Float], temperature: Float, topK: Int, rng: inout Xoshiro256) -> Int {
        var order = Array(logits.indices)
        order.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        if temperature <= 0 { return order[0] }
        let kept = topK > 0 ? Array(order.prefix(topK)) : order
        let top = logits[kept[0]]
        let weights = kept.map { exp(Double(logits[$0] - top) / Double(temperature)) }
        var u = Double(rng.uniform()) * weights.reduce(0, +)
        for (i, w) in zip(kept, weights) {
            u -= w
            if u < 0 { return i }
        }
        return kept[kept.count - 1]
    }
}
