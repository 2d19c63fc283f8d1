// Which routings a decoder can use: a language model's prediction at position
// t may depend on tokens 0…t only (Notebooks/part4-gpt.md, §4, the causal
// mask). Attention keeps that promise by its mask; the MoE layer keeps it
// only when each token's routing depends on that token alone, or on earlier
// tokens. Two choices here break it:
//
//   * expert choice (ExpertChoiceRouter.swift): each expert picks its C best
//     tokens from the whole batch, so whether token t reaches an expert
//     depends on how much later tokens want that expert;
//   * a capacity that drops by score or choice order (Capacity.swift): which
//     slot is turned away depends on slots of later tokens. Token order is
//     causal within a sequence: a slot is dropped only when earlier ones
//     filled its expert.
//
// A registered router (RouterRegistry.swift) is not known in advance, so it
// is tried: route 8 tokens, change the logits of the last four, and see
// whether the first four's experts or weights moved.
//
// A model trained that way is evaluated on a loss that peeks at the future,
// which is not a language model's loss; gpt-moe refuses such settings with
// this reason. Every routing it accepts passes the whole-model causality test
// (RouterRegistryTests.testTheGPTIsCausalForEveryRouterItAccepts).
extension RoutingSetup {
    /// Why these settings cannot route a decoder (one line naming the flag), or nil.
    public var decoderProblem: String? {
        if router == "expert-choice" {
            return "--router expert-choice cannot train a decoder: each expert picks its tokens from the whole " +
                "batch, so a token's output would depend on later tokens (use topk, switch, noisy or deepseek)"
        }
        if capacityFactor != nil && overflow != .tokenOrder {
            return "--overflow \(overflow.rawValue) cannot train a decoder: which slot is dropped would depend on " +
                "later tokens (use --overflow token-order)"
        }
        if let entry = RouterRegistry.entry(router), !routesCausally(entry) {
            return "--router \(router) cannot train a decoder: changing later tokens changed how earlier tokens " +
                "were routed, so a token's output would depend on later tokens"
        }
        return nil
    }

    /// Routes 8 tokens over 4 experts twice, the second time with the last four
    /// tokens' logits changed (evaluation mode, no noise); true when the first
    /// four tokens' experts and weights are the same both times.
    private func routesCausally(_ entry: RouterRegistry.Entry) -> Bool {
        let n = 8, e = 4, kept = 4
        var rng = Xoshiro256(seed: 0xCA05A1)
        let logits = Tensor.uniform([n, e], low: -2, high: 2, rng: &rng)
        var changed = logits
        for i in (kept * e)..<(n * e) { changed.data[i] = rng.uniform(-2, 2) }
        let make = { entry.make(RouterRequest(experts: e, k: min(self.k, e - 1), modelDim: 1, seed: 0)) }
        let context = RoutingContext(training: false, input: Tensor.zeros([n, 1]))
        let a = make().route(logits: logits, context: context), b = make().route(logits: changed, context: context)
        guard a.k == b.k else { return false }
        let first = kept * a.k
        return Array(a.experts[0..<first]) == Array(b.experts[0..<first])
            && Array(a.weights.data[0..<first]) == Array(b.weights.data[0..<first])
    }
}
