// TokenRouting: what a model's routers decided for each token of a text — the
// one input every routing view and specialization statistic here reads.
//
// Any model that can say, per token and per MoE layer, which experts it chose
// and with what weights can be analysed: the GPT trained here conforms to
// `RoutedModel` below; a pretrained checkpoint's loader (OLMoE, Granite) only
// has to do the same. Nothing else in Analysis/ knows which model it reads.
//
//     tokens   [N]            the token texts (and ids), in order
//     layers   [L]            one entry per MoE layer
//       experts  [N][k_n]     the experts token n went to, highest weight first
//       weights  [N][k_n]     their combine weights
//
// k_n is usually k; expert-choice routing gives each token as many slots as
// experts picked it (possibly none). Shared experts, which every token uses,
// are not listed. Notebooks/part6-specialization.md, §2.
//
// Legend: N tokens, L MoE layers, E experts per layer, k experts per token.
import Foundation

/// Per token and per MoE layer, the chosen experts and their weights.
public struct TokenRouting: Equatable {
    /// One MoE layer's decisions.
    public struct Layer: Equatable {
        /// The layer's index in the model (the transformer block, for GPT).
        public var layer: Int
        /// The experts of token n, highest weight first.   [N][k_n]
        public var experts: [[Int]]
        /// Their combine weights, in the same order.   [N][k_n]
        public var weights: [[Float]]

        public init(layer: Int, experts: [[Int]], weights: [[Float]]) {
            precondition(experts.count == weights.count && zip(experts, weights).allSatisfy { $0.count == $1.count },
                         "TokenRouting.Layer: experts and weights differ in shape")
            self.layer = layer
            self.experts = experts
            self.weights = weights
        }

        /// Reads a `Routing` of N tokens: every dispatched slot, by weight (highest
        /// first; equal weights keep slot order).
        public init(layer: Int, routing r: Routing) {
            var experts: [[Int]] = [], weights: [[Float]] = []
            for t in 0..<r.tokenCount {
                var slots: [(e: Int, w: Float, j: Int)] = []
                for j in 0..<r.k { if let e = r.dispatchedExpert(token: t, slot: j) { slots.append((e, r.weights.data[t * r.k + j], j)) } }
                slots.sort { $0.w > $1.w || ($0.w == $1.w && $0.j < $1.j) }
                experts.append(slots.map(\.e))
                weights.append(slots.map(\.w))
            }
            self.init(layer: layer, experts: experts, weights: weights)
        }

        /// The top-1 expert of every token; −1 for a token no expert took.   [N]
        public var topExperts: [Int] { experts.map { $0.first ?? -1 } }
    }

    /// The text of each token, as the tokenizer decodes it alone.   [N]
    public var tokens: [String]
    /// The token ids.   [N]
    public var tokenIds: [Int]
    /// E, experts per MoE layer.
    public var expertCount: Int
    public var layers: [Layer]

    public init(tokens: [String], tokenIds: [Int], expertCount: Int, layers: [Layer]) {
        precondition(tokens.count == tokenIds.count && layers.allSatisfy { $0.experts.count == tokens.count },
                     "TokenRouting: \(tokens.count) tokens, \(tokenIds.count) ids, layers of \(layers.map(\.experts.count)) tokens")
        self.tokens = tokens
        self.tokenIds = tokenIds
        self.expertCount = expertCount
        self.layers = layers
    }

    /// `{"tokens": [String], "layers": [{"layer": Int, "experts": [[Int]], "weights": [[Float]]}]}`,
    /// the object `route --json` prints.
    public var json: [String: Any] {
        ["tokens": tokens,
         "layers": layers.map { l -> [String: Any] in
             ["layer": l.layer, "experts": l.experts, "weights": l.weights.map { $0.map { Double($0) } }]
         }]
    }
}

/// A model whose MoE routing can be read token by token.
public protocol RoutedModel {
    /// E, experts per MoE layer.
    var routedExpertCount: Int { get }
    /// The longest sequence one forward pass takes.
    var maximumSequenceLength: Int { get }
    /// Runs `tokens` (one sequence, at most `maximumSequenceLength`) in evaluation
    /// mode and returns each MoE layer's decisions for them, in layer order.
    func routeTokens(_ tokens: [Int]) -> [TokenRouting.Layer]
    /// Several sequences of equal length at once (a default runs them one by one).
    func routeTokens(batch sequences: [[Int]]) -> [[TokenRouting.Layer]]
}

extension RoutedModel {
    public func routeTokens(batch sequences: [[Int]]) -> [[TokenRouting.Layer]] { sequences.map(routeTokens) }

    /// The routing of `ids`, decoded token by token with `decode`.
    public func routing(of ids: [Int], decode: (Int) -> String) -> TokenRouting {
        TokenRouting(tokens: ids.map(decode), tokenIds: ids, expertCount: routedExpertCount, layers: routeTokens(ids))
    }
}

extension GPT: RoutedModel {
    public var routedExpertCount: Int { moeLayers.first?.moe.experts.count ?? 0 }
    public var maximumSequenceLength: Int { config.contextLength }

    /// One forward pass without router noise or expert dropout; each MoE layer's
    /// `lastRouting` is what it did. The routing statistics are reset afterwards,
    /// as after `generate`: a look at the routing is not part of any statistic.
    public func routeTokens(_ tokens: [Int]) -> [TokenRouting.Layer] {
        routeTokens(batch: [tokens])[0]
    }

    /// B sequences of length T in one forward pass; token b·T + t of the routing
    /// is token t of sequence b.
    public func routeTokens(batch sequences: [[Int]]) -> [[TokenRouting.Layer]] {
        guard let t = sequences.first?.count, t > 0 else { return sequences.map { _ in [] } }
        precondition(t <= config.contextLength && sequences.allSatisfy { $0.count == t },
                     "GPT.routeTokens: sequences must share one length ≤ \(config.contextLength)")
        let saved = moeLayers.map { ($0.moe.training, $0.moe.progress) }
        setMode(training: false, progress: 1)
        _ = forward(tokens: sequences.flatMap { $0 }, batch: sequences.count)
        let layers = moeLayers.map { TokenRouting.Layer(layer: $0.layer, routing: $0.moe.lastRouting!) }
        for ((_, moe), s) in zip(moeLayers, saved) { moe.training = s.0; moe.progress = s.1; moe.resetStatistics() }
        return (0..<sequences.count).map { b in
            layers.map { l in
                TokenRouting.Layer(layer: l.layer, experts: Array(l.experts[(b * t)..<((b + 1) * t)]),
                                   weights: Array(l.weights[(b * t)..<((b + 1) * t)]))
            }
        }
    }
}
