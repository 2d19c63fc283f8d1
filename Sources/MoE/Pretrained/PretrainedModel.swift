// PretrainedModel: a decoder-only MoE transformer loaded from a Hugging Face
// checkpoint folder, one forward pass at a time (Notebooks/part5-pretrained.md).
//
// The forward pass reads top to bottom as the architecture. For the T new
// tokens at positions S … S+T−1 (S already in the KV caches):
//
//     h = embed[ids] · m_emb                                [T, D]   m_emb: granite's embedding_multiplier, else 1
//     for each layer:
//         h = h + m_res · attention(RMSNorm₁(h))            [T, D]   m_res: granite's residual_multiplier, else 1
//         h = h + m_res · moe(RMSNorm₂(h))                  [T, D]   routed by TopKGating (SparseMoEBlock)
//     logits = RMSNorm_f(h) · Wₒᵤₜᵀ / s                     [T, V]   Wₒᵤₜ = embed when tied; s: granite's logits_scaling
//
// Every weight is a view into the memory-mapped safetensors (CheckpointWeights):
// loading a model allocates only the small vectors (norm gains, biases). Every
// tensor is looked up and shape-checked at load time, so a wrong checkpoint
// fails before the first token with the tensor's name and expected shape.
//
// Legend: T new tokens, S cached positions, D width, V vocabulary, E experts, K per token, L layers.
import Foundation

/// What one forward pass returns.
public struct ForwardResult {
    /// Next-token logits for each new position.   [T, V] flat
    public var logits: [Float]
    /// Per MoE layer, the router logits of each position.   [L][T·E]
    public var routerLogits: [[Float]]
    /// Per MoE layer, the experts chosen for each position, best first.   [L][T·K]
    public var experts: [[Int]]
    /// Per MoE layer, TopKGating's decision for the new positions: experts and
    /// their combine weights, best first.   [L] of Routing(T, K)
    public var routings: [Routing]
}

public final class PretrainedModel {
    public let config: PretrainedConfig
    public let weights: CheckpointWeights
    let embedding: WeightTensor            // [V, D]
    let head: WeightTensor                 // [V, D]: the embedding itself when tied
    let finalNorm: RMSNorm
    let layers: [DecoderLayer]
    /// One per layer; `reset()` empties them for a new sequence.
    var caches: [KVCache]

    struct DecoderLayer {
        let attentionNorm: RMSNorm
        let attention: GroupedQueryAttention
        let moeNorm: RMSNorm
        let moe: SparseMoEBlock
    }

    /// Loads `config.json` and the safetensors in `directory`.
    public convenience init(directory: URL) throws {
        let config = try PretrainedConfig.load(directory: directory)
        try self.init(config: config, weights: CheckpointWeights(directory: directory))
    }

    public init(config c: PretrainedConfig, weights w: CheckpointWeights) throws {
        config = c
        weights = w
        let d = c.hiddenSize, h = c.headCount, g = c.keyValueHeadCount, dh = c.headSize, e = c.expertCount, f = c.expertSize
        func floats(_ name: String, _ n: Int) throws -> [Float] { try w.tensor(name, shape: [n]).floats() }
        embedding = try w.tensor("model.embed_tokens.weight", shape: [c.vocabularySize, d])
        if c.tiedEmbeddings && !w.contains("lm_head.weight") {
            head = embedding
        } else {
            head = try w.tensor("lm_head.weight", shape: [c.vocabularySize, d])
        }
        finalNorm = RMSNorm(weight: try floats("model.norm.weight", d), epsilon: c.rmsNormEpsilon)
        let rope = RotaryEmbedding(headSize: dh, base: c.ropeTheta)
        var layers: [DecoderLayer] = []
        for i in 0..<c.layerCount {
            let p = "model.layers.\(i)."
            let a = p + "self_attn."
            let biased = c.attentionBias
            let attention = GroupedQueryAttention(
                config: c,
                query: try w.tensor(a + "q_proj.weight", shape: [h * dh, d]),
                key: try w.tensor(a + "k_proj.weight", shape: [g * dh, d]),
                value: try w.tensor(a + "v_proj.weight", shape: [g * dh, d]),
                output: try w.tensor(a + "o_proj.weight", shape: [d, h * dh]),
                queryBias: biased ? try floats(a + "q_proj.bias", h * dh) : nil,
                keyBias: biased ? try floats(a + "k_proj.bias", g * dh) : nil,
                valueBias: biased ? try floats(a + "v_proj.bias", g * dh) : nil,
                queryNorm: c.queryKeyNorm ? RMSNorm(weight: try floats(a + "q_norm.weight", h * dh), epsilon: c.rmsNormEpsilon) : nil,
                keyNorm: c.queryKeyNorm ? RMSNorm(weight: try floats(a + "k_norm.weight", g * dh), epsilon: c.rmsNormEpsilon) : nil,
                rope: rope)
            layers.append(DecoderLayer(
                attentionNorm: RMSNorm(weight: try floats(p + "input_layernorm.weight", d), epsilon: c.rmsNormEpsilon),
                attention: attention,
                moeNorm: RMSNorm(weight: try floats(p + "post_attention_layernorm.weight", d), epsilon: c.rmsNormEpsilon),
                moe: try PretrainedModel.loadMoE(c, w, prefix: p, d: d, e: e, f: f)))
        }
        self.layers = layers
        caches = (0..<c.layerCount).map { _ in KVCache() }
    }

    /// The MoE block of one layer, under each family's tensor names.
    static func loadMoE(_ c: PretrainedConfig, _ w: CheckpointWeights, prefix p: String,
                        d: Int, e: Int, f: Int) throws -> SparseMoEBlock {
        var experts: [SwiGLUExpert] = []
        let routerName: String
        switch c.family {
        case .granitemoe:
            // Fused: input_linear [E, 2F, D] (gate rows, then up rows), output_linear [E, D, F].
            routerName = p + "block_sparse_moe.router.layer.weight"
            let input = try w.tensor(p + "block_sparse_moe.input_linear.weight", shape: [e, 2 * f, d])
            let output = try w.tensor(p + "block_sparse_moe.output_linear.weight", shape: [e, d, f])
            for j in 0..<e {
                let both = input.matrix(j)
                experts.append(SwiGLUExpert(gate: both.rows(0..<f), up: both.rows(f..<2 * f), down: output.matrix(j)))
            }
        case .mixtral, .olmoe, .qwen2_moe:
            // One tensor per expert and projection; only the names differ. Mixtral's
            // w1, w3, w2 are the gate, up and down projections of the others.
            let (block, gate, up, down) = c.family == .mixtral
                ? ("block_sparse_moe", "w1", "w3", "w2") : ("mlp", "gate_proj", "up_proj", "down_proj")
            routerName = p + block + ".gate.weight"
            for j in 0..<e {
                let x = p + block + ".experts.\(j)."
                experts.append(SwiGLUExpert(gate: try w.tensor(x + gate + ".weight", shape: [f, d]),    // [F, D]
                                            up: try w.tensor(x + up + ".weight", shape: [f, d]),        // [F, D]
                                            down: try w.tensor(x + down + ".weight", shape: [d, f])))   // [D, F]
            }
        }
        var shared: SwiGLUExpert?, sharedGate: WeightTensor?
        if c.family == .qwen2_moe && c.sharedExpertSize > 0 {
            let s = p + "mlp.shared_expert.", fs = c.sharedExpertSize
            shared = SwiGLUExpert(gate: try w.tensor(s + "gate_proj.weight", shape: [fs, d]),
                                  up: try w.tensor(s + "up_proj.weight", shape: [fs, d]),
                                  down: try w.tensor(s + "down_proj.weight", shape: [d, fs]))
            sharedGate = try w.tensor(p + "mlp.shared_expert_gate.weight", shape: [1, d])
        }
        // The family's routing, as settings of the toy's router.
        let gating = TopKGating(experts: e, k: c.expertsPerToken, renormalize: c.renormalizeTopK,
                                order: c.family == .granitemoe ? .topKThenSoftmax : .softmaxThenTopK)
        return SparseMoEBlock(router: try w.tensor(routerName, shape: [e, d]), experts: experts,
                              gating: gating, shared: shared, sharedGate: sharedGate)
    }

    /// Forgets the cached keys and values: the next forward starts a new sequence at position 0.
    public func reset() { caches = (0..<config.layerCount).map { _ in KVCache() } }

    /// Positions already in the KV cache (S).
    public var position: Int { caches.first?.count ?? 0 }

    /// Runs the new tokens `ids` [T] after the S cached ones. With
    /// `lastOnly`, only the last position's logits are computed (generation).
    public func forward(_ ids: [Int], lastOnly: Bool = false) throws -> ForwardResult {
        let c = config, d = c.hiddenSize, t = ids.count
        guard t > 0 else { throw PretrainedError(file: "--ids", problem: "no tokens to run") }
        guard position + t <= c.maxPositions else {
            throw PretrainedError(file: "config.json", problem: "\(position + t) positions exceed the model's maximum of \(c.maxPositions)")
        }
        for id in ids where id < 0 || id >= c.vocabularySize {
            throw PretrainedError(file: "--ids", problem: "token id \(id) is outside the vocabulary 0..<\(c.vocabularySize)")
        }
        var h = [Float]()                                                                  // [T, D]
        h.reserveCapacity(t * d)
        for id in ids { h += PretrainedKernels.embeddingRow(embedding, id) }
        if c.embeddingMultiplier != 1 { for i in 0..<h.count { h[i] *= c.embeddingMultiplier } }
        var routerLogits: [[Float]] = [], chosen: [[Int]] = [], routings: [Routing] = []
        let m = c.residualMultiplier
        for (layer, cache) in zip(layers, caches) {
            let a = layer.attention(layer.attentionNorm(h), tokens: t, cache: cache)      // [T, D]
            for i in 0..<h.count { h[i] += m * a[i] }
            let moe = layer.moe(layer.moeNorm(h), tokens: t)                              // [T, D]
            for i in 0..<h.count { h[i] += m * moe.output[i] }
            routerLogits.append(moe.logits)
            chosen.append(moe.experts)
            routings.append(moe.routing)
        }
        let rows = lastOnly ? Array(h[((t - 1) * d)...]) : h
        var logits = PretrainedKernels.linear(finalNorm(rows), tokens: lastOnly ? 1 : t, head)   // [T, V]
        if c.logitsScaling != 1 { for i in 0..<logits.count { logits[i] /= c.logitsScaling } }
        return ForwardResult(logits: logits, routerLogits: routerLogits, experts: chosen, routings: routings)
    }
}

/// `route` and `specialize` read a pretrained model as they read the GPT trained
/// here (Analysis/TokenRouting.swift): per token and MoE layer (every decoder
/// layer of these families), the experts TopKGating chose and their weights.
extension PretrainedModel: RoutedModel {
    public var routedExpertCount: Int { config.expertCount }
    public var maximumSequenceLength: Int { config.maxPositions }

    /// One forward pass of `tokens` as a new sequence (the KV caches are emptied
    /// before and after). The caller checks the ids and the length
    /// (`checkRoutable`); a bad one here is a programming error.
    public func routeTokens(_ tokens: [Int]) -> [TokenRouting.Layer] {
        reset()
        defer { reset() }
        do {
            let r = try forward(tokens)
            return r.routings.enumerated().map { TokenRouting.Layer(layer: $0.offset, routing: $0.element) }
        } catch {
            preconditionFailure("PretrainedModel.routeTokens: \(error)")
        }
    }

    /// Nil when `ids` can be routed; otherwise what is wrong (`what` names them: "--prompt", a file).
    public func routingProblem(_ ids: [Int], what: String) -> String? {
        if ids.isEmpty { return "\(what): encodes to no tokens, so there is nothing to route" }
        if let bad = ids.first(where: { $0 < 0 || $0 >= config.vocabularySize }) {
            return "\(what): token id \(bad) is outside the model's vocabulary of \(config.vocabularySize)"
        }
        return nil
    }
}
