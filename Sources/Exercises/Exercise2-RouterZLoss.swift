// Exercise 2 — the router z-loss and its backward.     (easy)
//
// Set in Notebooks/exercises.md, §2; derived in part1-foundations.md, §11.
// Grade it with:    swift run exercises check 2
//
// ST-MoE keeps the router's logits small with a penalty on the log of the
// softmax's normaliser:
//
//     lse[n] = log Σ_i exp(z[n, i])          [N]   (z: the logits)
//     L_z    = (1/N) Σ_n lse[n]²
//
// It is a `LoadBalancing` method like the Switch loss (LoadBalancingLoss.swift),
// with one difference: it depends on the logits, not on the probabilities, so
// its gradient goes in `BalancingTerm.logitGradient`. MoELayer adds that to
// dL/dlogits after the router's backward and multiplies it by `weight`.
//
// The library has its own RouterZLoss (Sources/MoE/MoE/Balancing+RouterZLoss.swift),
// with this same name and init; inside this module the name means yours (a
// module's own declarations shadow the ones it imports). Write yours first.
//
// Legend: N tokens, E experts.
import MoE

public final class RouterZLoss: LoadBalancing {
    public var weight: Float
    /// ST-MoE's c_z = 10⁻³ by default.
    public init(weight: Float = 1e-3) { self.weight = weight }
    public var name: String { "z" }

    /// The unweighted L_z and dL_z/dlogits [N, E].
    public func evaluate(routing: Routing, logits z: Tensor) -> BalancingTerm {
        let n = z.shape[0], e = z.shape[1]
        // Step 1. For each token, lse = m + log Σ_i exp(z[n, i] − m) with m the
        //         row's largest logit. (Why the m? Try exp(1000) in Float.)
        //         Summing in Double keeps the value free of Float rounding.
        // Step 2. value = the mean over tokens of lse².
        // Step 3. The gradient. d lse / dz[n, j] is a probability (which one?
        //         part 1, §11), and the chain rule through the square and the
        //         mean gives dL_z/dz[n, j]. Write it into a [N, E] tensor.
        // Step 4. Return BalancingTerm(value: …, logitGradient: …).
        //
        // Placeholder (wrong): a zero loss with a zero gradient.
        return BalancingTerm(value: 0, logitGradient: Tensor.zeros([n, e]))
    }

    /// The z-loss has no "balanced" value: it measures the size of the logits.
    public func referenceValues(experts: Int, k: Int) -> (balanced: Double, collapsed: Double)? { nil }
}
