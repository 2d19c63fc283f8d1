// MoELayer: route each token to k experts, run each expert once on its tokens,
// and add up the answers weighted by the gate.
//
//     routing     = TopKGating(x)                        which experts, what weights
//     for each expert e:
//         X_e     = rows of x routed to e                [n_e, D]   (dispatch)
//         Y_e     = Expert_e(X_e)                        [n_e, D]   one matmul pair per expert
//     y[n]        = Σ_slots w[n, j] · Y_{e(n,j)}[row]    [N, D]     (combine)
//
// Grouping by expert is the whole trick: a token-by-token loop would do N·k
// tiny matrix-vector products; grouping does E matrix-matrix products, which
// the tiled matmul runs near peak. Experts are independent, so they run in
// parallel, one thread each. Notebooks/part2-implementation.md, §6.
//
// Backward, reading the forward from the bottom up:
//     dL/dw[n, j]   = dy[n] · Y_{e(n,j)}[row]        how much more of this expert would help
//     dL/dY_e[row]  = w[n, j] · dy[n]                each expert sees its share of the gradient
//     dL/dX_e       = Expert_e.backward(dL/dY_e)
//     dL/dx[n]     += dL/dX_e[row] for each of n's slots, plus the router's dL/dx
//
// Legend: N tokens, D model width, E experts, K experts per token, n_e tokens of expert e.
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

    public init(experts: Int) {
        tokenCounts = [Int](repeating: 0, count: experts)
        probabilitySums = [Double](repeating: 0, count: experts)
    }

    public mutating func add(_ r: Routing) {
        let e = r.expertCount
        for expert in r.experts { tokenCounts[expert] += 1 }
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

/// A sparse mixture-of-experts layer: `TopKGating` plus E `Expert`s.
public final class MoELayer: Layer {
    public let gate: TopKGating
    public let experts: [Expert]
    /// α, the weight of the load-balancing loss in the training loss.
    public var auxLossWeight: Float
    /// The Switch loss of the last forward pass (unweighted).
    public private(set) var auxLoss = SwitchLoadBalancingLoss(routing: Routing(
        k: 1, probabilities: .zeros([0, 1]), experts: [], weights: .zeros([0, 1])))
    /// What routing did since the last `resetStatistics()`.
    public private(set) var statistics: RoutingStatistics
    /// The routing of the last forward pass.
    public private(set) var lastRouting: Routing?

    // Cached by forward for backward:
    private var groups: [[(token: Int, slot: Int)]] = []   // per expert, its (token, slot) pairs in token order
    private var expertOutputs: [Tensor] = []               // Y_e [n_e, D] per expert

    public init(modelDim: Int, hiddenDim: Int, experts: Int, k: Int, auxLossWeight: Float = 0.1,
                activation: ExpertActivation = .relu, renormalize: Bool = true, rng: inout Xoshiro256) {
        gate = TopKGating(modelDim: modelDim, experts: experts, k: k, renormalize: renormalize, rng: &rng)
        var list: [Expert] = []
        for _ in 0..<experts {
            let expert = Expert(modelDim: modelDim, hiddenDim: hiddenDim, activation: activation, rng: &rng)
            expert.threads = 1   // parallelism is across experts, below
            list.append(expert)
        }
        self.experts = list
        self.auxLossWeight = auxLossWeight
        statistics = RoutingStatistics(experts: experts)
    }

    public var modelDim: Int { gate.router.inFeatures }

    /// x [N, D] -> y [N, D]. Also computes `auxLoss` and adds to `statistics`.
    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rank == 2 && x.shape[1] == modelDim,
                     "MoELayer: input has shape \(x.shape), expected [N, \(modelDim)]")
        let n = x.shape[0], d = modelDim, k = gate.k
        let routing = gate.forward(x)
        lastRouting = routing
        auxLoss = SwitchLoadBalancingLoss(routing: routing)
        statistics.add(routing)

        // Dispatch: list each expert's (token, slot) pairs, in token order.
        groups = Array(repeating: [], count: experts.count)
        for t in 0..<n { for j in 0..<k { groups[routing.experts[t * k + j]].append((t, j)) } }

        // Run every expert on its rows, in parallel across experts.
        var outputs = [Tensor](repeating: .zeros([0, d]), count: experts.count)
        outputs.withUnsafeMutableBufferPointer { out in
            Parallel.forEach(experts.count) { e in
                let rows = groups[e]
                guard !rows.isEmpty else { return }   // an idle expert costs nothing
                let xe = x.gatherRows(rows.map(\.token))   // X_e [n_e, D]
                out[e] = experts[e].forward(xe)            // Y_e [n_e, D]
            }
        }
        expertOutputs = outputs

        // Combine: y[n] += w[n, j] · Y_e[row].
        var y = Tensor.zeros([n, d])
        for e in experts.indices {
            for (r, pair) in groups[e].enumerated() {
                y.addRow(pair.token, scaledRow: r, of: outputs[e], by: routing.weights.data[pair.token * k + pair.slot])
            }
        }
        return y
    }

    /// dy [N, D] -> dx [N, D]; adds every expert's and the router's gradients,
    /// including α · ∂aux/∂p from the load-balancing loss.
    public func backward(_ dy: Tensor) -> Tensor {
        guard let routing = lastRouting else { preconditionFailure("MoELayer.backward called before forward") }
        let n = routing.tokenCount, d = modelDim, k = gate.k
        precondition(dy.shape == [n, d], "MoELayer.backward: dy has shape \(dy.shape), expected [\(n), \(d)]")

        // dL/dw[n, j] = dy[n] · Y_e[row]
        var dw = Tensor.zeros([n, k])
        for e in experts.indices {
            for (r, pair) in groups[e].enumerated() {
                dw.data[pair.token * k + pair.slot] = dy.dotRow(pair.token, withRow: r, of: expertOutputs[e])
            }
        }

        // Each expert's backward on dL/dY_e = w · dy, in parallel across experts.
        var inputGradients = [Tensor](repeating: .zeros([0, d]), count: experts.count)
        inputGradients.withUnsafeMutableBufferPointer { out in
            Parallel.forEach(experts.count) { e in
                let rows = groups[e]
                guard !rows.isEmpty else { return }
                var dye = Tensor.zeros([rows.count, d])   // dL/dY_e [n_e, D]
                for (r, pair) in rows.enumerated() {
                    dye.addRow(r, scaledRow: pair.token, of: dy, by: routing.weights.data[pair.token * k + pair.slot])
                }
                out[e] = experts[e].backward(dye)        // dL/dX_e [n_e, D]
            }
        }

        // The router: from dw, plus α·∂aux/∂p.
        let dpAux = auxLossWeight != 0 ? auxLoss.probabilityGradient(tokens: n, scale: auxLossWeight) : nil
        var dx = gate.backward(weightGradient: dw, probabilityGradient: dpAux)   // [N, D]

        // Scatter the experts' input gradients back to their tokens.
        for e in experts.indices {
            for (r, pair) in groups[e].enumerated() {
                dx.addRow(pair.token, scaledRow: r, of: inputGradients[e], by: 1)
            }
        }
        return dx
    }

    public func resetStatistics() { statistics = RoutingStatistics(experts: experts.count) }

    /// Parameters a single token uses: the router and k experts.
    public var activeParameterCount: Int {
        gate.router.parameterCount + gate.k * (experts.first?.parameterCount ?? 0)
    }

    public var namedParameters: [(name: String, parameter: Parameter)] {
        var list = prefixed("gate", gate.namedParameters)
        for (i, expert) in experts.enumerated() { list += prefixed("experts.\(i)", expert.namedParameters) }
        return list
    }
}
