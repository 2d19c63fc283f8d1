// The importance + load loss of Shazeer et al. 2017 ("Outrageously Large
// Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer"): penalise the
// spread of expert use, measured by the squared coefficient of variation.
//
//     g[n, i]  = the combine weight token n gives expert i (0 if not chosen)   [N, E]
//     I_i      = Σₙ g[n, i]                  importance: gate weight expert i got   [E]
//     c_i      = #{slots dispatched to i}    load: tokens expert i really ran on   [E]
//     CV²(x)   = σ²(x) / μ(x)²               spread relative to the mean, scale-free
//     L        = CV²(I) + CV²(c)             (training adds α·L, α = 0.1 by default,
//                                              like the Switch loss, so an ablation
//                                              compares methods and not weights)
//
// Both terms are 0 when every expert gets the same share and grow as the share
// spreads. Derivation: Notebooks/part1-foundations.md, §11.
//
// Computing CV² through sums of squares. With A = Σᵢ xᵢ, B = Σᵢ xᵢ² and the
// population mean and variance over the E experts (μ = A/E, σ² = B/E − A²/E²):
//
//     CV² = (B/E − A²/E²) / (A²/E²) = E·B/A² − 1
//
// The obvious code, "std / mean, squared", goes through σ = √σ², whose
// derivative 1/(2√σ²) is infinite at perfect balance, so backpropagation
// multiplies ∞ by 0 and returns NaN exactly where the loss is trying to go.
// E·B/A² − 1 has no square root; its gradient there is finite (zero). A = 0
// (no tokens, or no weight) has no spread to measure: value and gradient 0.
//
// What carries a gradient, honestly:
//   * CV²(I) does. I is a sum of combine weights, smooth in the logits of the
//     chosen experts (the choice held fixed), so ∂L/∂w[n, j] = ∂CV²/∂I_{e(n,j)}
//     is an extra [N, K] term added to the task's dL/dw before the router's
//     backward (BalancingTerm.weightGradient).
//     Know its limit: the router's Jacobian only moves weight *between a
//     token's chosen experts*. With renormalised top-k, A = N for every batch
//     and an unchosen expert's logit gets exactly nothing (§6); with
//     renormalised top-1 every weight is 1 and the whole gradient is 0.
//   * CV²(c) does not. c counts discrete choices, a step function of the
//     logits: it is in the value, so a log shows the real load, and constant
//     to the gradient. Shazeer et al. make the load smooth by estimating,
//     under their *noisy* top-k gating, the probability that each expert would
//     still be chosen if the noise were redrawn (a normal CDF); that estimator
//     needs the noise, which this router has not got, so it is not
//     implemented here. Without it the load term is a reading, not a force.
//   * `.probabilities` (an option, not the paper) sums the router's full
//     distribution instead, I_i = Σₙ p[n, i], as many later codes do: then
//     ∂L/∂p[n, i] = ∂CV²/∂I_i reaches every expert's logit through the
//     softmax, the way the Switch loss's P does.
//
// Reading the value (`referenceValues`), for E experts and k slots:
//   * balanced: 0 — every expert the same importance and the same load
//     (the load can be exactly even only when N·k is a multiple of E).
//   * collapsed: every token sends its k slots to the same k experts, with
//     the weight spread evenly over them (the symmetric collapse):
//         I = (N/k, …, N/k, 0, …, 0):  A = N,   B = k·(N/k)² = N²/k,
//                                      CV²(I) = E·(N²/k)/N² − 1 = E/k − 1
//         c = (N, …, N, 0, …, 0):      A = N·k, B = k·N²,
//                                      CV²(c) = E·k·N²/(N·k)² − 1 = E/k − 1
//     so L = 2·(E/k − 1): 6 for the MNIST model's 8 experts and top-2, 14 for
//     top-1. CV²(c) can be no larger (cᵢ ≤ N, so B ≤ N·A), but CV²(I) can, up
//     to E − 1 when one expert takes all of every token's weight.
//
// Legend: N tokens, E experts, K slots per token.
import Foundation

/// CV²(importance) + CV²(load), Shazeer et al. 2017, weight α.
///
///     let layer = MoELayer(modelDim: 256, hiddenDim: 128, experts: 8,
///                          router: TopKGating(experts: 8, k: 2),
///                          balancing: [ImportanceLoadBalancing(weight: 0.1)], rng: &rng)
public final class ImportanceLoadBalancing: LoadBalancing {
    /// What "importance" sums over the batch.
    public enum Importance: String {
        /// The combine weights of the chosen experts (Shazeer et al.'s gate values).
        case gateWeights = "weights"
        /// The router's whole distribution p (not the paper; reaches every logit).
        case probabilities
    }

    public var weight: Float
    public let importance: Importance
    /// The two terms of the last `evaluate`, for logs: CV²(I) and CV²(c).
    public private(set) var lastImportanceCV2: Double = 0
    public private(set) var lastLoadCV2: Double = 0

    public init(weight: Float = 0.1, importance: Importance = .gateWeights) {
        self.weight = weight
        self.importance = importance
    }

    public var name: String { "cv2" }

    /// The value CV²(I) + CV²(c) and the gradient of CV²(I): on the weights
    /// [N, K] for `.gateWeights`, on the probabilities [N, E] for `.probabilities`.
    ///
    /// - Complexity: O(N·(K + E)).
    public func evaluate(routing r: Routing, logits: Tensor) -> BalancingTerm {
        let n = r.tokenCount, e = r.expertCount, k = r.k
        var importanceSums = [Double](repeating: 0, count: e)   // I [E]
        switch importance {
        case .gateWeights:
            // A capacity-dropped slot keeps its weight here: the gate gave it,
            // whether or not the expert then had room.
            for t in 0..<n {
                for j in 0..<k where r.experts[t * k + j] >= 0 {
                    importanceSums[r.experts[t * k + j]] += Double(r.weights.data[t * k + j])
                }
            }
        case .probabilities:
            for t in 0..<n { for i in 0..<e { importanceSums[i] += Double(r.probabilities.data[t * e + i]) } }
        }
        var load = [Double](repeating: 0, count: e)             // c [E]
        for t in 0..<n {
            for j in 0..<k { if let expert = r.dispatchedExpert(token: t, slot: j) { load[expert] += 1 } }
        }
        lastImportanceCV2 = Self.squaredCoefficientOfVariation(importanceSums)
        lastLoadCV2 = Self.squaredCoefficientOfVariation(load)
        let value = lastImportanceCV2 + lastLoadCV2

        // ∂L/∂I [E]; the load term contributes nothing (see the top of the file).
        let g = Self.squaredCoefficientOfVariationGradient(importanceSums).map { Float($0) }
        switch importance {
        case .gateWeights:
            // I_i = Σ over slots with e(n, j) = i of w[n, j]  ⇒  ∂L/∂w[n, j] = g[e(n, j)]
            var dw = Tensor.zeros([n, k])   // [N, K]
            for t in 0..<n {
                for j in 0..<k where r.experts[t * k + j] >= 0 { dw.data[t * k + j] = g[r.experts[t * k + j]] }
            }
            return BalancingTerm(value: value, weightGradient: dw)
        case .probabilities:
            // I_i = Σₙ p[n, i]  ⇒  ∂L/∂p[n, i] = g[i], the same row for every token
            var dp = Tensor.zeros([n, e])   // [N, E]
            for t in 0..<n { for i in 0..<e { dp.data[t * e + i] = g[i] } }
            return BalancingTerm(value: value, probabilityGradient: dp)
        }
    }

    /// Balanced 0; collapsed 2·(E/k − 1), derived at the top of the file.
    public func referenceValues(experts: Int, k: Int) -> (balanced: Double, collapsed: Double)? {
        (0, 2 * (Double(experts) / Double(k) - 1))
    }

    /// CV²(x) = σ²/μ² = E·B/A² − 1 with A = Σ xᵢ, B = Σ xᵢ² (population
    /// variance); 0 when A = 0. Clamped at 0: at exact balance rounding could
    /// leave a −1e-16.
    ///
    ///     squaredCoefficientOfVariation([1, 1, 1, 1])   // 0
    ///     squaredCoefficientOfVariation([4, 0, 0, 0])   // 3 = E − 1
    public static func squaredCoefficientOfVariation(_ x: [Double]) -> Double {
        let a = x.reduce(0, +), b = x.reduce(0) { $0 + $1 * $1 }
        guard a != 0 else { return 0 }
        return max(Double(x.count) * b / (a * a) - 1, 0)
    }

    /// Backward of CV²(x) = E·B/A² − 1. With ∂A/∂xⱼ = 1 and ∂B/∂xⱼ = 2xⱼ:
    ///
    ///     ∂CV²/∂xⱼ = E·(2xⱼ/A² − 2B/A³) = (2E/A²)·(xⱼ − B/A)
    ///
    /// At balance xⱼ = A/E = B/A, so every component is exactly 0 — finite,
    /// unlike the square-root form. Above the "square-weighted mean" B/A it
    /// is positive (push that expert down), below it negative. 0 when A = 0.
    /// Notebooks/part1-foundations.md, §11.   x [E] -> ∂CV²/∂x [E]
    public static func squaredCoefficientOfVariationGradient(_ x: [Double]) -> [Double] {
        let a = x.reduce(0, +), b = x.reduce(0) { $0 + $1 * $1 }
        guard a != 0 else { return x.map { _ in 0 } }
        let scale = 2 * Double(x.count) / (a * a), centre = b / a
        return x.map { scale * ($0 - centre) }
    }
}
