// ═══════════════════════════════════════════════════════════════════════════
//  REFERENCE SOLUTION — exercise 2. Try the exercise first, in
//  Sources/Exercises/Exercise2-RouterZLoss.swift; read this afterwards.
// ═══════════════════════════════════════════════════════════════════════════
//
// The router z-loss (ST-MoE), a `LoadBalancing` method whose gradient is on
// the logits (Notebooks/part1-foundations.md, §11; Notebooks/exercises.md, §2):
//
//     lse[n] = log Σ_i exp(z[n, i]) = m + log Σ_i exp(z[n, i] − m),  m = max_i z[n, i]
//     L_z    = (1/N) Σ_n lse[n]²
//     dL_z/dz[n, j] = 2 · lse[n] · p[n, j] / N,   p[n, j] = exp(z[n, j] − lse[n])
//
// Legend: N tokens, E experts.
import Foundation
import MoE

public final class RouterZLoss: LoadBalancing {
    public var weight: Float
    /// ST-MoE's c_z = 10⁻³ by default.
    public init(weight: Float = 1e-3) { self.weight = weight }
    public var name: String { "z" }

    public func evaluate(routing: Routing, logits z: Tensor) -> BalancingTerm {
        let n = z.shape[0], e = z.shape[1]
        var value = 0.0
        var gradient = Tensor.zeros([n, e])   // dL_z/dz [N, E]
        for t in 0..<n {
            // In Double: the value is a sum of squares that a finite difference
            // will divide by 2ε, so it should carry no Float rounding of its own.
            let row = (0..<e).map { Double(z[t, $0]) }
            let m = row.max() ?? 0
            let lse = m + log(row.reduce(0) { $0 + exp($1 - m) })   // never exp of a large number
            value += lse * lse
            for j in 0..<e {
                let p = exp(row[j] - lse)                              // softmax, from the same lse
                gradient[t, j] = Float(2 * lse * p / Double(n))
            }
        }
        return BalancingTerm(value: n > 0 ? value / Double(n) : 0, logitGradient: gradient)
    }

    /// No fixed "balanced" value: the z-loss measures the size of the logits, not the load.
    public func referenceValues(experts: Int, k: Int) -> (balanced: Double, collapsed: Double)? { nil }
}
