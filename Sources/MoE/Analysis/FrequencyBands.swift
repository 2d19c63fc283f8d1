// FrequencyBands: rare, middle and common tokens, by how often each occurs in
// the training text — the label of the "frequency, not meaning" question.
//
// The claim to test (../shared/seeds/000): experts split along token frequency,
// one taking rare tokens, one common ones. To ask it with the same statistic as
// the domains, every vocabulary entry gets a band from its count in the
// training text, and the band becomes the label of each routed token.
//
// Two ways to cut the vocabulary into B bands, ranked from rarest to commonest:
//   * `.occurrences` (the default): each band holds about 1/B of the training
//     text's tokens. Every band then has data (the rarest third of a character
//     vocabulary is only ~1% of the text, so by types the "rare" band would be
//     nearly empty in any sample), and MI has log2 B bits of room.
//   * `.types`: each band holds about 1/B of the vocabulary entries.
// A token is placed by the middle of its own stretch of the cumulative count,
// so a token more frequent than a whole band (a space in English) takes one
// band alone and later bands still follow. Tokens never seen in training are
// the rarest. Notebooks/part6-specialization.md, §4.
//
// Legend: V vocabulary, B bands.
import Foundation

/// A frequency band for each vocabulary entry.
public struct FrequencyBands {
    /// How the bands divide the ranked vocabulary.
    public enum Balance: String { case occurrences, types }

    /// The band of each token id, 0 = rarest.   [V]
    public let bandOfToken: [Int]
    /// B.
    public let bandCount: Int
    /// Training occurrences of each token id.   [V]
    public let trainingCounts: [Int]
    public let balance: Balance

    /// - Parameters:
    ///   - trainingTokens: the training text, encoded.
    ///   - vocabularySize: V; every id must be below it.
    ///   - bands: B ≥ 1 (3: terciles, 10: deciles).
    /// - Complexity: O(N + V log V).
    public init(trainingTokens: [Int], vocabularySize: Int, bands: Int, balance: Balance = .occurrences) {
        precondition(bands >= 1 && vocabularySize >= 1, "FrequencyBands: \(bands) bands over \(vocabularySize) tokens")
        var counts = [Int](repeating: 0, count: vocabularySize)
        for t in trainingTokens {
            precondition(t >= 0 && t < vocabularySize, "FrequencyBands: token \(t) outside 0..<\(vocabularySize)")
            counts[t] += 1
        }
        // Rarest first; equal counts by id, so the bands do not depend on sort stability.
        let ranked = (0..<vocabularySize).sorted { counts[$0] < counts[$1] || (counts[$0] == counts[$1] && $0 < $1) }
        var band = [Int](repeating: 0, count: vocabularySize)
        let total = Double(max(trainingTokens.count, 1))
        var before = 0.0
        for (rank, t) in ranked.enumerated() {
            // The middle of this token's stretch of [0, 1): its count, or its one vocabulary slot.
            let middle: Double
            switch balance {
            case .occurrences: middle = (before + Double(counts[t]) / 2) / total; before += Double(counts[t])
            case .types: middle = (Double(rank) + 0.5) / Double(vocabularySize)
            }
            band[t] = min(bands - 1, Int(middle * Double(bands)))
        }
        bandOfToken = band
        bandCount = bands
        trainingCounts = counts
        self.balance = balance
    }

    /// "rare", "middle", "common" for terciles; "band 1 (rarest)" … "band B (commonest)" otherwise.
    public var names: [String] {
        if bandCount == 3 { return ["rare", "middle", "common"] }
        if bandCount == 1 { return ["all"] }
        return (0..<bandCount).map { b in
            "band \(b + 1)" + (b == 0 ? " (rarest)" : b == bandCount - 1 ? " (commonest)" : "")
        }
    }

    /// Vocabulary entries in each band.   [B]
    public var typesPerBand: [Int] {
        var n = [Int](repeating: 0, count: bandCount)
        for b in bandOfToken { n[b] += 1 }
        return n
    }

    /// Share of the training text's tokens in each band.   [B]
    public var trainingSharePerBand: [Double] {
        var n = [Double](repeating: 0, count: bandCount)
        for (t, b) in bandOfToken.enumerated() { n[b] += Double(trainingCounts[t]) }
        let total = n.reduce(0, +)
        return n.map { total > 0 ? $0 / total : 0 }
    }
}
