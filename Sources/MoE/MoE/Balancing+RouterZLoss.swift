// The router z-loss of ST-MoE (Zoph et al. 2022, "ST-MoE: Designing Stable
// and Transferable Sparse Expert Models"): keep the router's logits small.
//
//     z        = the gate's logits                         [N, E]
//     lse_n    = log Σᵢ exp(z[n, i])                        [N]    the softmax's log-normaliser
//     L_z      = (1/N) · Σₙ lse_n²                          scalar (training adds c_z·L_z, c_z = 1e-3)
//
// It is not a balance measure. It exists for numerical stability: large logits
// make exp lose precision (badly so in 16-bit formats), and they saturate the
// softmax, where its gradient vanishes (Notebooks/part1-foundations.md, §7).
// ST-MoE found it stabilised training without hurting quality, with c_z =
// 1e-3. Derivation: Notebooks/part1-foundations.md, §11.
//
// Reading the value: there is no "balanced" or "collapsed" value, so
// `referenceValues` is nil. What a number means: all-zero logits (a router
// that has learned nothing) give lse = ln E, so L_z = (ln E)² — 4.32 for 8
// experts (`valueAtZeroLogits`). A value far above that says the logits have
// grown large (a confident or saturated router); it can fall below it, to 0,
// when Σᵢ exp(zᵢ) = 1, i.e. when the logits are already log-probabilities.
//
// It reads the gate's logits z as they are, before any router temperature:
// the size of z is what the loss is about.
//
// Numerics: lse is computed as m + log Σᵢ exp(zᵢ − m), m = the row maximum,
// as `softmaxRows` does, so exp never overflows.
//
// Legend: N tokens, E experts.
import Foundation

/// Mean over tokens of logsumexp(logits)², ST-MoE; weight c_z.
///
///     let layer = MoELayer(modelDim: 256, hiddenDim: 128, experts: 8,
///                          router: TopKGating(experts: 8, k: 2),
///                          balancing: [SwitchBalancing(weight: 0.1), RouterZLoss(weight: 1e-3)], rng: &rng)
public final class RouterZLoss: LoadBalancing {
    /// c_z; ST-MoE uses 1e-3: L_z is O(1–10) and should nudge, not compete with the task.
    public var weight: Float

    public init(weight: Float = 1e-3) { self.weight = weight }

    public var name: String { "z" }

    /// Value and gradient on the logits; the routing is not read (the choice
    /// does not enter the loss at all).
    ///
    /// In the forward pass this was:  L_z = (1/N) Σₙ lse_n²,  lse_n = log Σᵢ exp(z[n, i]).
    /// The derivative of log-sum-exp is the softmax, ∂lse_n/∂z[n, j] = p[n, j], so
    ///
    ///     ∂L_z/∂z[n, j] = (1/N) · 2·lse_n · p[n, j]
    ///
    /// Every logit is pulled down in proportion to its probability, the largest
    /// hardest. Unlike a softmax gradient it does not sum to 0 over j (it sums
    /// to 2·lse_n/N): it lowers the common level of the logits, which the
    /// softmax cannot see. Notebooks/part1-foundations.md, §11.
    ///
    /// - Complexity: O(N·E).
    public func evaluate(routing: Routing, logits z: Tensor) -> BalancingTerm {
        precondition(z.rank == 2, "RouterZLoss: logits have shape \(z.shape), expected [N, E]")
        let n = z.shape[0], e = z.shape[1]
        guard n > 0, e > 0 else { return BalancingTerm(value: 0, logitGradient: Tensor.zeros(z.shape)) }
        let lse = Self.logSumExp(z)      // [N]
        let p = softmaxRows(z)           // [N, E]
        var value = 0.0
        for t in 0..<n { value += Double(lse[t]) * Double(lse[t]) }
        value /= Double(n)
        var dz = p                       // [N, E]
        for t in 0..<n {
            let s = 2 * lse[t] / Float(n)
            for i in 0..<e { dz.data[t * e + i] *= s }
        }
        return BalancingTerm(value: value, logitGradient: dz)
    }

    /// Not a balance measure: nil. See `valueAtZeroLogits` for a reference point.
    public func referenceValues(experts: Int, k: Int) -> (balanced: Double, collapsed: Double)? { nil }

    /// L_z when every logit is 0, i.e. a router that has not started: (ln E)².
    public static func valueAtZeroLogits(experts: Int) -> Double {
        let l = log(Double(experts))
        return l * l
    }

    /// lse_n = m_n + log Σᵢ exp(z[n, i] − m_n), m_n = maxᵢ z[n, i].   z [N, E] -> [N]
    public static func logSumExp(_ z: Tensor) -> [Float] {
        let n = z.shape[0], e = z.shape[1]
        return (0..<n).map { t in
            var m = -Float.infinity
            for i in 0..<e { m = max(m, z.data[t * e + i]) }
            var s: Float = 0
            for i in 0..<e { s += exp(z.data[t * e + i] - m) }
            return m + log(s)
        }
    }
}
