// ContingencyTable: how often each label met each expert, and how much knowing
// one tells about the other (mutual information, in bits).
//
// The question "do experts specialise?" becomes a table. Every routed token (or
// image) has a label — its domain, its frequency band, its digit — and a top-1
// expert. Count them:
//
//     n[r][e] = tokens with label r whose top-1 expert is e        [R, E]
//
// Reading the rows as shares (`rowShares`) says where each label's tokens go.
// One number sums it up: the mutual information between label and expert,
//
//     I(L; X) = Σ_r Σ_e p(r, e) · log2( p(r, e) / (p(r) · p(e)) )    bits
//             = H(X) − H(X | L)
//
// with p(r, e) = n[r][e] / N and the marginals p(r), p(e). It is 0 exactly when
// the expert is independent of the label (every row has the same shares), and at
// most min(H(L), H(X)) ≤ log2 min(R, E): log2 E bits when E equally common labels
// each go to an expert of their own. Notebooks/part6-specialization.md, §1 derives
// it; PermutationTest.swift says how big a value chance alone produces.
//
// Legend: R labels (rows), E experts (columns), N counted tokens.
import Foundation

/// Counts of (label, expert) pairs, with the statistics the specialization analysis reads.
///
///     let table = ContingencyTable(labels: [0, 0, 1, 1], experts: [2, 2, 0, 0], labelCount: 2, expertCount: 3)
///     table.mutualInformationBits   // 1.0: the expert names the label
public struct ContingencyTable: Equatable {
    /// n[r][e]: pairs with label r and expert e.   [R, E]
    public let counts: [[Int]]
    public var labelCount: Int { counts.count }
    public var expertCount: Int { counts.first?.count ?? 0 }

    /// A table from its counts; every row must have the same length and no count be negative.
    public init(counts: [[Int]]) {
        precondition(counts.allSatisfy { $0.count == (counts.first?.count ?? 0) && $0.allSatisfy { $0 >= 0 } },
                     "ContingencyTable: rows of unequal length or a negative count")
        self.counts = counts
    }

    /// Counts the pairs (labels[i], experts[i]). A negative expert (a token no
    /// expert took, as expert choice can leave one) is not counted.
    /// - Complexity: O(N + R·E).
    public init(labels: [Int], experts: [Int], labelCount: Int, expertCount: Int) {
        precondition(labels.count == experts.count, "ContingencyTable: \(labels.count) labels for \(experts.count) experts")
        var c = [[Int]](repeating: [Int](repeating: 0, count: expertCount), count: labelCount)
        for (r, e) in zip(labels, experts) where e >= 0 {
            precondition(r >= 0 && r < labelCount && e < expertCount,
                         "ContingencyTable: pair (\(r), \(e)) outside \(labelCount) labels × \(expertCount) experts")
            c[r][e] += 1
        }
        counts = c
    }

    /// N, the pairs counted.
    public var total: Int { counts.reduce(0) { $0 + $1.reduce(0, +) } }
    /// n[r] = Σ_e n[r][e].   [R]
    public var labelTotals: [Int] { counts.map { $0.reduce(0, +) } }
    /// n[e] = Σ_r n[r][e].   [E]
    public var expertTotals: [Int] {
        (0..<expertCount).map { e in counts.reduce(0) { $0 + $1[e] } }
    }

    /// Row r as shares: of label r's tokens, the fraction each expert took (a row
    /// with no tokens is all 0).   [R, E]
    public var rowShares: [[Double]] {
        counts.map { row in
            let n = row.reduce(0, +)
            return row.map { n > 0 ? Double($0) / Double(n) : 0 }
        }
    }

    /// Each expert's share of all counted tokens, p(e).   [E]
    public var expertShares: [Double] {
        let n = Double(max(total, 1))
        return expertTotals.map { Double($0) / n }
    }

    /// I(label; expert) in bits (0 for an empty table).
    /// - Complexity: O(R·E).
    public var mutualInformationBits: Double {
        Self.mutualInformationBits(flat: counts.flatMap { $0 }, labelCount: labelCount, expertCount: expertCount)
    }

    /// H(label) in bits: the most the expert could tell about the label.
    public var labelEntropyBits: Double { Self.entropyBits(labelTotals) }
    /// H(expert) in bits: the most the label could tell about the expert.
    public var expertEntropyBits: Double { Self.entropyBits(expertTotals) }

    /// I(L; X) from a row-major [R·E] count array, the form the permutation test refills.
    ///
    ///     I = Σ n_re/N · log2( n_re · N / (n_r · n_e) )     (cells with n_re = 0 add 0)
    static func mutualInformationBits(flat counts: [Int], labelCount: Int, expertCount: Int) -> Double {
        var rows = [Int](repeating: 0, count: labelCount), columns = [Int](repeating: 0, count: expertCount)
        var n = 0
        for r in 0..<labelCount {
            for e in 0..<expertCount {
                let c = counts[r * expertCount + e]
                rows[r] += c; columns[e] += c; n += c
            }
        }
        guard n > 0 else { return 0 }
        let total = Double(n)
        var sum = 0.0
        for r in 0..<labelCount where rows[r] > 0 {
            for e in 0..<expertCount {
                let c = counts[r * expertCount + e]
                guard c > 0 else { continue }
                sum += Double(c) * log2(Double(c) * total / (Double(rows[r]) * Double(columns[e])))
            }
        }
        // Rounding can leave −1e−16 for an independent table; MI is never negative.
        return max(0, sum / total)
    }

    /// −Σ p log2 p of counts (0 for none).
    static func entropyBits(_ counts: [Int]) -> Double {
        let n = Double(counts.reduce(0, +))
        guard n > 0 else { return 0 }
        return counts.reduce(0) { $1 > 0 ? $0 - Double($1) / n * log2(Double($1) / n) : $0 }
    }
}
