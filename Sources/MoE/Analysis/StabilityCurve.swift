// StabilityCurve: when does routing settle? (../shared/seeds/000: "specialization
// patterns emerge within the first few hundred training steps and remain
// largely stable afterward".)
//
// At every evaluation the trainer routes the same probe tokens (a fixed set of
// validation windows) and keeps each one's top-1 expert (ProbeRouting.swift).
// After training, compare each evaluation with the last:
//
//     agreement(s) = share of probe tokens whose top-1 expert at step s equals
//                    their top-1 expert at the final step
//
// It is 1 at the final step by definition, and ~1/E at initialisation if the
// early routing has nothing to do with the final one. "Stable from step s" means
// agreement ≥ 90% at s and at every later evaluation (`firstStableStep`): one
// lucky evaluation followed by a relapse does not count.
// Notebooks/part6-specialization.md, §5.
//
// Legend: S evaluations, P probe tokens.
import Foundation

/// Agreement of each evaluation's top-1 routing with the final one, for one MoE layer.
public struct StabilityCurve: Equatable {
    /// The evaluation steps, in order.   [S]
    public let steps: [Int]
    /// agreement(s): share of probe tokens routed as at the last step.   [S]
    public let agreement: [Double]

    /// - Parameter assignments: per evaluation, the top-1 expert of every probe
    ///   token, the same tokens in the same order each time.   [S][P]
    public init(steps: [Int], assignments: [[Int]]) {
        precondition(steps.count == assignments.count, "StabilityCurve: \(steps.count) steps, \(assignments.count) assignments")
        precondition(assignments.allSatisfy { $0.count == (assignments.last?.count ?? 0) },
                     "StabilityCurve: evaluations routed different numbers of probe tokens")
        self.steps = steps
        guard let final = assignments.last, !final.isEmpty else {
            agreement = assignments.map { _ in 1 }
            return
        }
        agreement = assignments.map { a in
            Double(zip(a, final).reduce(0) { $0 + ($1.0 == $1.1 ? 1 : 0) }) / Double(final.count)
        }
    }

    /// The first step from which agreement stays ≥ `threshold` at every later evaluation.
    /// Never nil for a non-empty curve with threshold ≤ 1 (the final step agrees with itself).
    public func firstStableStep(threshold: Double = 0.9) -> Int? {
        var first: Int? = nil
        for (step, a) in zip(steps, agreement).reversed() {
            guard a >= threshold else { break }
            first = step
        }
        return first
    }
}
