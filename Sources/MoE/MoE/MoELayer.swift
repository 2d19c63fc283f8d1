// MoELayer: route each token to k experts, run each expert once on its tokens,
// and add up the answers weighted by the gate.
//
//     logits      = gate(x) = x·Wᵀ (+ b)                 [N, E]   no bias in the walkthrough's gate
//     routing     = router.route(logits)                 which experts, what weights (Router.swift)
//     for each expert e:
//         X_e     = rows of x routed to e                [n_e, D]   (dispatch)
//         Y_e     = Expert_e(X_e)                        [n_e, D]   one matmul pair per expert
//     y[n]        = Σ_slots w[n, j] · Y_{e(n,j)}[row]    [N, D]     (combine)
//
// Grouping by expert is the whole trick: a token-by-token loop would do N·k
// tiny matrix-vector products; grouping does E matrix-matrix products, which
// the tiled matmul runs near peak. Experts are independent, so they run in
// parallel, each thread taking experts of similar total rows. Notebooks/part2-implementation.md, §5 and §16.
//
// Around that core, the pieces a student swaps (issue "routing"): any `Router`
// (TopKGating is the default), any list of `LoadBalancing` methods (the Switch
// loss by default), an optional `Capacity` that drops overflow, and shared
// experts that every token uses beside the routed ones (DeepSeekMoE):
//     y[n] += Σ_s Shared_s(x[n])
//
// Backward, reading the forward from the bottom up:
//     dL/dw[n, j]   = dy[n] · Y_{e(n,j)}[row]        how much more of this expert would help
//     dL/dY_e[row]  = w[n, j] · dy[n]                each expert sees its share of the gradient
//     dL/dX_e       = Expert_e.backward(dL/dY_e)
//     dL/dx[n]     += dL/dX_e[row] for each of n's slots, plus the router's dL/dx
//
// Part 2 writes this layer as `x, aux_loss, expert_counts = self.moe(x)`; that
// call is `callAsFunction` below. Checkpoint names follow Part 2's modules:
// `gating.gate.weight`, `gating.noise_weights`, `experts.{i}.net.0.*`, `experts.{i}.net.2.*`.
//
// Legend: N tokens, D model width, E experts, K experts per token, n_e tokens of expert e.
// (The walkthrough writes B for the tokens of a batch, N for the experts, d for the width.)
import Foundation

/// What routing did, accumulated over many batches (an epoch, a test set).
public struct RoutingStatistics {
    /// Token-slots each expert received (a token counts once per expert it goes to).   [E]
    public var tokenCounts: [Int]
    /// Σ over tokens of the router probability of each expert.   [E]
    public var probabilitySums: [Double]
    /// Σ over tokens of the entropy of the router distribution, −Σᵢ pᵢ ln pᵢ.
    public var entropySum: Double = 0
    public var tokens = 0
    /// Slots that chose an expert, and those of them dropped by capacity.
    public var chosenSlots = 0
    public var droppedSlots = 0

    public init(experts: Int) {
        tokenCounts = [Int](repeating: 0, count: experts)
        probabilitySums = [Double](repeating: 0, count: experts)
    }

    public mutating func add(_ r: Routing) {
        let e = r.expertCount
        for t in 0..<r.tokenCount {
            for j in 0..<r.k where r.experts[t * r.k + j] >= 0 {
                chosenSlots += 1
                if let expert = r.dispatchedExpert(token: t, slot: j) { tokenCounts[expert] += 1 } else { droppedSlots += 1 }
            }
        }
        for t in 0..<r.tokenCount {
            var h = 0.0
            for i in 0..<e {
                let p = Double(r.probabilities.data[t * e + i])
                probabilitySums[i] += p
                if p > 0 { h -= p * log(p) }
            }
            entropySum += h
        }
        tokens += r.tokenCount
    }

    /// Share of chosen slots that capacity turned away.
    public var droppedShare: Double { chosenSlots > 0 ? Double(droppedSlots) / Double(chosenSlots) : 0 }
    /// Share of routed token-slots per expert; sums to 1. Uniform is 1/E.
    public var usage: [Double] {
        let total = tokenCounts.reduce(0, +)
        return tokenCounts.map { total > 0 ? Double($0) / Double(total) : 0 }
    }
    /// Mean router probability per expert (Pᵢ over the whole set).
    public var meanProbabilities: [Double] { probabilitySums.map { tokens > 0 ? $0 / Double(tokens) : 0 } }
    /// Mean per-token router entropy in nats: ln E for a router that cannot
    /// decide, 0 for one that is certain. Confident routing is low.
    public var routerEntropy: Double { tokens > 0 ? entropySum / Double(tokens) : 0 }
    /// Entropy of the usage distribution in nats: ln E when the load is even.
    public var loadEntropy: Double { usage.reduce(0) { $1 > 0 ? $0 - $1 * log($1) : $0 } }
    /// Coefficient of variation (std / mean) of the expert load: 0 when even.
    public var loadCoefficientOfVariation: Double {
        let u = usage, mean = 1 / Double(max(u.count, 1))
        let variance = u.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(max(u.count, 1))
        return variance.squareRoot() / mean
    }
}

/// A sparse mixture-of-experts layer: a gate, a `Router`, E `Expert`s, and
/// the balancing methods that keep them all in use.
public final class MoELayer: Layer {
    /// Router logits: Linear(D → E), W [E, D] (and b [E] only if asked for);
    /// checkpoint name "gating.gate" (Part 2's `TopKGating.gate`).
    public let gate: Linear
    public let router: Router
    public let experts: [Expert]
    /// Experts every token uses, added with weight 1 (DeepSeekMoE); usually none.
    public let sharedExperts: [Expert]
    public var balancing: [LoadBalancing]
    /// A capacity limit per expert, or nil for dropless routing.
    public var capacity: Capacity?
    /// Training (noise, dropout on) or evaluation; set by the trainer.
    public var training = true
    /// Fraction of training done (0 → 1), for schedules such as the router temperature.
    public var progress: Double = 0
    /// The balancing losses of the last forward pass, unweighted, one per method.
    public private(set) var balancingValues: [Double] = []
    /// What routing did since the last `resetStatistics()`.
    public private(set) var statistics: RoutingStatistics
    /// The routing of the last forward pass.
    public private(set) var lastRouting: Routing?

    // Cached by forward for backward:
    private var input: Tensor?
    private var lastLogits: Tensor?
    private var lastTerms: [BalancingTerm] = []
    private var groups: [[(token: Int, slot: Int)]] = []   // per expert, its (token, slot) pairs in token order
    private var expertOutputs: [Tensor] = []               // Y_e [n_e, D] per expert

    /// The walkthrough's layer: a bias-free gate, top-k gating with learned
    /// noise (`noise: .none` to drop it), Switch loss with weight α.
    public convenience init(modelDim: Int, hiddenDim: Int, experts: Int, k: Int, auxLossWeight: Float = 0.1,
                            activation: ExpertActivation = .relu, renormalize: Bool = true,
                            noise: TopKGating.Noise = .learned, gateBias: Bool = false, seed: UInt64 = 0,
                            rng: inout Xoshiro256) {
        self.init(modelDim: modelDim, hiddenDim: hiddenDim, experts: experts,
                  router: TopKGating(experts: experts, k: k, renormalize: renormalize, noise: noise, seed: seed),
                  balancing: [SwitchBalancing(weight: auxLossWeight)], gateBias: gateBias, activation: activation, rng: &rng)
    }

    /// Any router and balancing methods. Parameters are drawn from `rng` in
    /// the order gate, routed experts, shared experts.
    public init(modelDim: Int, hiddenDim: Int, experts: Int, router: Router, balancing: [LoadBalancing],
                capacity: Capacity? = nil, sharedExperts: Int = 0, sharedHiddenDim: Int? = nil,
                gateBias: Bool = true, activation: ExpertActivation = .relu, rng: inout Xoshiro256) {
        precondition(router.expertCount == experts,
                     "MoELayer: the router has \(router.expertCount) experts, the layer \(experts)")
        gate = Linear(inFeatures: modelDim, outFeatures: experts, bias: gateBias, rng: &rng)
        func makeExperts(_ count: Int, hidden: Int) -> [Expert] {
            (0..<count).map { _ in
                let expert = Expert(modelDim: modelDim, hiddenDim: hidden, activation: activation, rng: &rng)
                expert.threads = 1   // parallelism is across experts, below
                return expert
            }
        }
        self.experts = makeExperts(experts, hidden: hiddenDim)
        self.sharedExperts = makeExperts(sharedExperts, hidden: sharedHiddenDim ?? hiddenDim)
        self.router = router
        self.balancing = balancing
        self.capacity = capacity
        statistics = RoutingStatistics(experts: experts)
    }

    public var modelDim: Int { gate.inFeatures }

    /// α of the first balancing method (the Switch loss by default); 0 when there is none.
    public var auxLossWeight: Float {
        get { balancing.first?.weight ?? 0 }
        set { balancing.first?.weight = newValue }
    }
    /// The first balancing method's value in the last forward pass, unweighted.
    public var auxLoss: Double { balancingValues.first ?? 0 }
    /// Σ α_b · value_b over the balancing methods: what the training loss adds.
    public var weightedAuxLoss: Double {
        zip(balancing, balancingValues).reduce(0) { $0 + Double($1.0.weight) * $1.1 }
    }

    /// Part 2's `output, aux_loss, expert_counts = moe(x)`: x [N, D] -> y [N, D],
    /// the unweighted balancing loss of this batch (L_balance, before α), and
    /// how many of the batch's token-slots each expert received [E].
    public func callAsFunction(_ x: Tensor) -> (output: Tensor, auxLoss: Double, expertCounts: [Int]) {
        let y = forward(x)
        return (y, auxLoss, lastExpertCounts)
    }

    /// Token-slots each expert received in the last forward pass (dropped slots not counted).   [E]
    public var lastExpertCounts: [Int] {
        var counts = [Int](repeating: 0, count: experts.count)
        if let r = lastRouting {
            for t in 0..<r.tokenCount { for j in 0..<r.k { if let e = r.dispatchedExpert(token: t, slot: j) { counts[e] += 1 } } }
        }
        return counts
    }

    /// x [N, D] -> y [N, D]. Also evaluates the balancing methods and adds to `statistics`.
    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rank == 2 && x.shape[1] == modelDim,
                     "MoELayer: input has shape \(x.shape), expected [N, \(modelDim)]")
        let n = x.shape[0], d = modelDim, k = router.slots
        input = x
        let logits = gate.forward(x)   // [N, E]
        lastLogits = logits
        var bias: [Float]? = nil
        for b in balancing {
            if let extra = b.selectionBias { bias = zip(bias ?? extra.map { _ in 0 }, extra).map { $0 + $1 } }
        }
        var routing = router.route(logits: logits,
                                   context: RoutingContext(training: training, progress: progress,
                                                           selectionBias: bias, input: x))
        if let capacity { routing = capacity.apply(to: routing, activeExperts: router.activeExperts) }
        lastRouting = routing
        lastTerms = balancing.map { $0.evaluate(routing: routing, logits: logits) }
        balancingValues = lastTerms.map(\.value)
        statistics.add(routing)

        // Dispatch: list each expert's (token, slot) pairs, in token order.
        groups = Array(repeating: [], count: experts.count)
        for t in 0..<n {
            for j in 0..<k {
                if let e = routing.dispatchedExpert(token: t, slot: j) { groups[e].append((t, j)) }
            }
        }

        // Run every expert on its rows, in parallel across experts; shared
        // experts (on every row) are extra iterations of the same loop.
        let routed = experts.count
        var outputs = [Tensor](repeating: .zeros([0, d]), count: routed + sharedExperts.count)
        outputs.withUnsafeMutableBufferPointer { out in
            Parallel.forEach(costs: expertCosts(tokens: n)) { e in
                if e >= routed { out[e] = sharedExperts[e - routed].forward(x); return }
                let rows = groups[e]
                guard !rows.isEmpty else { return }   // an idle expert costs nothing
                let xe = x.gatherRows(rows.map(\.token))   // X_e [n_e, D]
                out[e] = experts[e].forward(xe)            // Y_e [n_e, D]
            }
        }
        expertOutputs = outputs

        // Combine: y[n] += w[n, j] · Y_e[row], then + Shared_s(x)[n].
        var y = Tensor.zeros([n, d])
        for e in experts.indices {
            for (r, pair) in groups[e].enumerated() {
                y.addRow(pair.token, scaledRow: r, of: outputs[e], by: routing.weights.data[pair.token * k + pair.slot])
            }
        }
        for s in sharedExperts.indices { y += outputs[routed + s] }
        return y
    }

    /// dy [N, D] -> dx [N, D]; adds every expert's and the router's gradients,
    /// including α · ∂aux/∂(probabilities, logits) from the balancing losses.
    public func backward(_ dy: Tensor) -> Tensor {
        guard let routing = lastRouting, let logits = lastLogits else {
            preconditionFailure("MoELayer.backward called before forward")
        }
        let n = routing.tokenCount, d = modelDim, k = router.slots, routed = experts.count
        precondition(dy.shape == [n, d], "MoELayer.backward: dy has shape \(dy.shape), expected [\(n), \(d)]")

        // dL/dw[n, j] = dy[n] · Y_e[row]; empty and dropped slots multiplied nothing: 0.
        var dw = Tensor.zeros([n, k])
        for e in experts.indices {
            for (r, pair) in groups[e].enumerated() {
                dw.data[pair.token * k + pair.slot] = dy.dotRow(pair.token, withRow: r, of: expertOutputs[e])
            }
        }

        // Each expert's backward on dL/dY_e = w · dy (shared experts: dy itself),
        // in parallel across experts.
        var inputGradients = [Tensor](repeating: .zeros([0, d]), count: routed + sharedExperts.count)
        inputGradients.withUnsafeMutableBufferPointer { out in
            Parallel.forEach(costs: expertCosts(tokens: n)) { e in
                if e >= routed { out[e] = sharedExperts[e - routed].backward(dy); return }
                let rows = groups[e]
                guard !rows.isEmpty else { return }
                var dye = Tensor.zeros([rows.count, d])   // dL/dY_e [n_e, D]
                for (r, pair) in rows.enumerated() {
                    dye.addRow(r, scaledRow: pair.token, of: dy, by: routing.weights.data[pair.token * k + pair.slot])
                }
                out[e] = experts[e].backward(dye)        // dL/dX_e [n_e, D]
            }
        }

        // The router: from dw + Σ α·∂aux/∂w, plus Σ α·∂aux/∂p; then Σ α·∂aux/∂logits; then the gate.
        var dp: Tensor? = nil
        var dLogitsExtra: Tensor? = nil
        for (b, term) in zip(balancing, lastTerms) where b.weight != 0 {
            if let g = term.weightGradient { dw += g * b.weight }   // [N, K], e.g. CV² importance
            if let g = term.probabilityGradient {
                if dp == nil { dp = Tensor.zeros(g.shape) }
                dp! += g * b.weight
            }
            if let g = term.logitGradient {
                if dLogitsExtra == nil { dLogitsExtra = Tensor.zeros(g.shape) }
                dLogitsExtra! += g * b.weight
            }
        }
        var dLogits = router.backward(weightGradient: dw, probabilityGradient: dp)   // [N, E]
        if let extra = dLogitsExtra { dLogits += extra }
        precondition(dLogits.shape == logits.shape,
                     "MoELayer: \(router.name).backward returned \(dLogits.shape), expected \(logits.shape)")
        var dx = gate.backward(dLogits)   // [N, D]
        if let routerDx = router.inputGradient() { dx += routerDx }

        // Scatter the experts' input gradients back to their tokens.
        for e in experts.indices {
            for (r, pair) in groups[e].enumerated() {
                dx.addRow(pair.token, scaledRow: r, of: inputGradients[e], by: 1)
            }
        }
        for s in sharedExperts.indices { dx += inputGradients[routed + s] }
        return dx
    }

    /// Work per iteration of the experts' parallel loop: each routed expert's
    /// rows, then the shared experts' (every token). Threads get shares of
    /// similar total; which thread runs an expert changes no result.
    private func expertCosts(tokens: Int) -> [Int] {
        groups.map(\.count) + sharedExperts.map { _ in tokens }
    }

    /// After an optimiser step: balancing methods that adjust themselves
    /// (the auxiliary-loss-free bias) look at the step's routing.
    public func afterStep() {
        guard let r = lastRouting else { return }
        for b in balancing { b.update(after: r) }
    }

    public func resetStatistics() { statistics = RoutingStatistics(experts: experts.count) }

    /// Routing state that is not a weight (the aux-free bias), by checkpoint name:
    /// "balancing.<i>.<method>".
    public var namedBuffers: [(name: String, value: Tensor)] {
        balancing.enumerated().compactMap { i, b in b.savedState.map { ("balancing.\(i).\(b.name)", $0) } }
    }

    /// Restores a buffer saved under `name` (as `namedBuffers` names it).
    public func restoreBuffer(named name: String, value: Tensor) throws {
        for (i, b) in balancing.enumerated() where name == "balancing.\(i).\(b.name)" { try b.restore(state: value) }
    }

    /// Parameters a single token uses: the gate, the router's own, its
    /// average number of routed experts, and every shared expert.
    public var activeParameterCount: Int {
        let perExpert = experts.first?.parameterCount ?? 0
        let shared = sharedExperts.reduce(0) { $0 + $1.parameterCount }
        let own = router.namedParameters.reduce(0) { $0 + $1.parameter.value.count }
        return gate.parameterCount + own + Int((router.activeExperts * Double(perExpert)).rounded()) + shared
    }

    public var namedParameters: [(name: String, parameter: Parameter)] {
        // Part 2's `gating` module holds the gate and the noise weights; other
        // routers' own weights (noisy top-k's noise network) sit beside them.
        var list = prefixed("gating.gate", gate.namedParameters)
        list += prefixed("gating", router.namedParameters)
        for (i, expert) in experts.enumerated() { list += prefixed("experts.\(i)", expert.namedParameters) }
        for (i, expert) in sharedExperts.enumerated() { list += prefixed("shared.\(i)", expert.namedParameters) }
        return list
    }
}
