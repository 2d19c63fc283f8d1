// PermutationTest: is this much mutual information more than chance gives?
//
// Mutual information measured on a finite sample is never exactly 0, even when
// label and expert are independent: N tokens spread over R·E cells leave every
// row's shares a little off the average, and MI counts those wobbles as
// information. (For large N its expected value under independence is about
// (R−1)(E−1) / (2N ln 2) bits.) So a number like "0.02 bits" means nothing until
// it stands beside what chance alone produces on the same tokens.
//
// The permutation test produces that directly. If the label did not matter,
// any reshuffling of the labels over the same tokens would be as likely as the
// one observed. So:
//
//     observed  = I(labels; experts)
//     for b in 1...B:  shuffle the labels (seeded), I_b = I(shuffled; experts)
//     chance    = mean of I_b                                 the chance level
//     p-value   = (1 + #{b : I_b ≥ observed}) / (1 + B)
//
// The shuffle keeps every marginal — how many tokens each label has, how many
// each expert took — and breaks only the pairing, which is exactly what
// "independent" means. The +1s count the observed labelling as one of the
// permutations, so p is never 0: with B = 1000 the smallest is 1/1001 ≈ 0.001.
// Notebooks/part6-specialization.md, §1.
//
// Legend: N tokens, R labels, E experts, B permutations.
import Foundation

/// The mutual information of a labelling, its chance level and its permutation p-value.
public struct PermutationTest: Equatable {
    /// I(label; expert) of the data as observed, bits.
    public let observedBits: Double
    /// Mean I over the shuffled labellings: the value chance alone gives, bits.
    public let chanceBits: Double
    /// Standard deviation of I over the shuffled labellings, bits.
    public let chanceStandardDeviationBits: Double
    /// Largest I over the shuffled labellings, bits.
    public let chanceMaximumBits: Double
    /// Shuffled labellings with I at least the observed one.
    public let atLeastObserved: Int
    /// B, the shuffles drawn.
    public let permutations: Int
    /// The seed of the shuffling generator (the same seed gives the same result).
    public let seed: UInt64

    /// (1 + #{I_b ≥ observed}) / (1 + B): the probability of a value this large if
    /// labels and experts were independent.
    public var pValue: Double { Double(1 + atLeastObserved) / Double(1 + permutations) }

    /// Runs the test on N (label, expert) pairs; pairs with a negative expert are left out.
    ///
    /// - Complexity: O(B·(N + R·E)); 1,000 shuffles of 100,000 tokens take well under a second.
    public static func mutualInformation(labels: [Int], experts: [Int], labelCount: Int, expertCount: Int,
                                         permutations: Int = 1000, seed: UInt64 = 0) -> PermutationTest {
        precondition(labels.count == experts.count, "PermutationTest: \(labels.count) labels for \(experts.count) experts")
        precondition(permutations >= 0, "PermutationTest: \(permutations) permutations")
        let kept = experts.indices.filter { experts[$0] >= 0 }
        var shuffled = kept.map { labels[$0] }                 // [N]
        let chosen = kept.map { experts[$0] }                  // [N]
        for (r, e) in zip(shuffled, chosen) {
            precondition(r >= 0 && r < labelCount && e < expertCount,
                         "PermutationTest: pair (\(r), \(e)) outside \(labelCount) labels × \(expertCount) experts")
        }
        func information(_ labels: [Int]) -> Double {
            var counts = [Int](repeating: 0, count: labelCount * expertCount)   // [R·E]
            for i in labels.indices { counts[labels[i] * expertCount + chosen[i]] += 1 }
            return ContingencyTable.mutualInformationBits(flat: counts, labelCount: labelCount, expertCount: expertCount)
        }
        return run(observed: information(shuffled), permutations: permutations, seed: seed) { rng in
            rng.shuffle(&shuffled)
            return information(shuffled)
        }
    }

    /// The loop every test here shares: B times, `shuffleAndMeasure` draws a
    /// labelling from `rng` and returns its I; the observed value's place among
    /// them gives the chance level and the p-value.
    private static func run(observed: Double, permutations: Int, seed: UInt64,
                            shuffleAndMeasure: (inout Xoshiro256) -> Double) -> PermutationTest {
        var rng = Xoshiro256(seed: seed)
        var sum = 0.0, squares = 0.0, maximum = 0.0, atLeast = 0
        for _ in 0..<permutations {
            let value = shuffleAndMeasure(&rng)
            sum += value; squares += value * value; maximum = max(maximum, value)
            // A shuffle that reproduces the observed table gives the same sum in
            // another order; the tolerance keeps rounding from deciding the count.
            if value >= observed - 1e-12 { atLeast += 1 }
        }
        let b = Double(max(permutations, 1))
        let mean = sum / b
        return PermutationTest(observedBits: observed, chanceBits: permutations > 0 ? mean : .nan,
                               chanceStandardDeviationBits: permutations > 1 ? (max(0, squares / b - mean * mean)).squareRoot() : .nan,
                               chanceMaximumBits: permutations > 0 ? maximum : .nan,
                               atLeastObserved: atLeast, permutations: permutations, seed: seed)
    }

    /// The same test of I(label; expert | stratum): how much the label tells about
    /// the expert among tokens of one stratum (the same token id, say), averaged
    /// over the strata by their size,
    ///
    ///     I(L; X | S) = Σ_s p(s) · I(L; X | S = s)
    ///
    /// and the labels are shuffled only within each stratum, so the chance level
    /// keeps every stratum's own mix of labels and experts. With the token id as
    /// the stratum this asks whether the domain moves the router beyond what the
    /// token itself does (Notebooks/part6-specialization.md, §3).
    /// - Complexity: O(B·(N + S·R·E)) for S distinct strata.
    public static func conditionalMutualInformation(labels: [Int], experts: [Int], strata: [Int], labelCount: Int,
                                                    expertCount: Int, permutations: Int = 1000,
                                                    seed: UInt64 = 0) -> PermutationTest {
        precondition(labels.count == experts.count && strata.count == experts.count,
                     "PermutationTest: \(labels.count) labels, \(experts.count) experts, \(strata.count) strata")
        // Group the kept pairs by stratum: segment s is positions bounds[s]..<bounds[s+1].
        let kept = experts.indices.filter { experts[$0] >= 0 }.sorted { (strata[$0], $0) < (strata[$1], $1) }
        var shuffled = kept.map { labels[$0] }
        let chosen = kept.map { experts[$0] }
        var stratumOf = [Int](repeating: 0, count: kept.count)   // compact stratum index per position
        var bounds = [0]
        for i in kept.indices {
            if i > 0 && strata[kept[i]] != strata[kept[i - 1]] { bounds.append(i) }
            stratumOf[i] = bounds.count - 1
        }
        bounds.append(kept.count)
        let s = bounds.count - 1, n = Double(max(kept.count, 1))
        for (r, e) in zip(shuffled, chosen) {
            precondition(r >= 0 && r < labelCount && e < expertCount,
                         "PermutationTest: pair (\(r), \(e)) outside \(labelCount) labels × \(expertCount) experts")
        }
        let cells = labelCount * expertCount
        func information(_ labels: [Int]) -> Double {
            var counts = [Int](repeating: 0, count: s * cells)   // [S, R, E]
            for i in labels.indices { counts[stratumOf[i] * cells + labels[i] * expertCount + chosen[i]] += 1 }
            var sum = 0.0
            for k in 0..<s {
                let slice = Array(counts[(k * cells)..<((k + 1) * cells)])
                let size = Double(bounds[k + 1] - bounds[k])
                sum += size / n * ContingencyTable.mutualInformationBits(flat: slice, labelCount: labelCount, expertCount: expertCount)
            }
            return sum
        }
        return run(observed: information(shuffled), permutations: permutations, seed: seed) { rng in
            // Fisher–Yates within each stratum's segment.
            for k in 0..<s {
                let lo = bounds[k], count = bounds[k + 1] - lo
                var i = count - 1
                while i > 0 { shuffled.swapAt(lo + i, lo + rng.below(i + 1)); i -= 1 }
            }
            return information(shuffled)
        }
    }

    /// The test for a label that is a function of the token, such as its
    /// frequency band: `labelOfType[t]` is the label of token id t. Shuffling
    /// the labels of the N tokens would break that function, and the router,
    /// which sorts tokens by identity, would beat it by far whatever the label
    /// meant. The stricter null keeps the function and draws it at random:
    /// shuffle `labelOfType` over the token ids (the same number of types per
    /// label), relabel every token, measure I again. A label beats this only if
    /// grouping the types *by it* tells more about the expert than grouping them
    /// at random does (Notebooks/part6-specialization.md, §4).
    /// - Complexity: O(B·(N + V + R·E)) for V token ids.
    public static func typeGrouping(tokens: [Int], labelOfType: [Int], experts: [Int], labelCount: Int,
                                    expertCount: Int, permutations: Int = 200, seed: UInt64 = 0) -> PermutationTest {
        precondition(tokens.count == experts.count, "PermutationTest: \(tokens.count) tokens for \(experts.count) experts")
        let kept = experts.indices.filter { experts[$0] >= 0 }
        let ids = kept.map { tokens[$0] }, chosen = kept.map { experts[$0] }   // [N]
        func information(_ map: [Int]) -> Double {
            var counts = [Int](repeating: 0, count: labelCount * expertCount)
            for i in ids.indices { counts[map[ids[i]] * expertCount + chosen[i]] += 1 }
            return ContingencyTable.mutualInformationBits(flat: counts, labelCount: labelCount, expertCount: expertCount)
        }
        var map = labelOfType
        return run(observed: information(labelOfType), permutations: permutations, seed: seed) { rng in
            rng.shuffle(&map)
            return information(map)
        }
    }

    /// The result as it goes into a summary.json (keys documented in Notebooks/part6-specialization.md, §3).
    public var json: [String: Any] {
        func num(_ x: Double) -> Any { x.isFinite ? x : NSNull() }
        return ["mi_bits": observedBits, "chance_mi_bits": num(chanceBits), "chance_mi_std_bits": num(chanceStandardDeviationBits),
                "chance_mi_max_bits": num(chanceMaximumBits), "p_value": pValue, "permutations": permutations,
                "seed": seed]
    }

    /// "0.412 bits (chance 0.003 ± 0.001, p = 0.001, 1000 shuffles)".
    public var summary: String {
        String(format: "%.4f bits (chance %.4f ± %.4f, p = %.3g, %d shuffles)", observedBits, chanceBits,
               chanceStandardDeviationBits, pValue, permutations)
    }
}
