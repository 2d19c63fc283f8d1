// CharacteristicTokens: the tokens an expert takes far more often than it takes
// tokens in general — what a table of shares cannot show.
//
// An expert with a 20% base rate that takes 90% of every "{" is telling
// something about "{". The measure is the lift of the token for the expert:
//
//     base(e)    = n_e / N                 the expert's share of all tokens
//     lift(t, e) = (n_te / n_t) / base(e)  how many times its base rate it takes t
//
// Lift 1 is no preference; an expert that takes every occurrence of t has lift
// 1/base(e). A token seen twice can reach any lift by luck, so only tokens with
// at least `minimumCount` occurrences are ranked; ties go to the more frequent
// token. Notebooks/part6-specialization.md, §3.
//
// Legend: N tokens, E experts, t a token id, n_t its occurrences, n_te those routed to e.
import Foundation

/// One token's preference for one expert.
public struct CharacteristicToken: Equatable {
    public let token: Int
    /// n_t: occurrences of the token in the analysed text.
    public let occurrences: Int
    /// n_te: of them, those whose top-1 expert is this one.
    public let routedHere: Int
    /// n_te / n_t.
    public var share: Double { Double(routedHere) / Double(occurrences) }
    /// share / the expert's base rate.
    public let lift: Double
}

public enum CharacteristicTokens {
    /// For every expert, up to `count` tokens with the highest lift (lift > 1 only).
    /// Tokens with a negative expert (routed nowhere) are left out.
    ///
    /// - Complexity: O(N + E·V log V) for V distinct tokens.
    public static func top(tokens: [Int], experts: [Int], expertCount: Int, count: Int = 5,
                           minimumCount: Int = 5) -> [[CharacteristicToken]] {
        precondition(tokens.count == experts.count, "CharacteristicTokens: \(tokens.count) tokens for \(experts.count) experts")
        var perToken: [Int: [Int]] = [:]        // t -> n_te   [E]
        var perExpert = [Int](repeating: 0, count: expertCount)
        var n = 0
        for (t, e) in zip(tokens, experts) where e >= 0 {
            perToken[t, default: [Int](repeating: 0, count: expertCount)][e] += 1
            perExpert[e] += 1
            n += 1
        }
        return (0..<expertCount).map { e -> [CharacteristicToken] in
            guard perExpert[e] > 0 else { return [] }
            let base = Double(perExpert[e]) / Double(n)
            var list: [CharacteristicToken] = []
            for (t, row) in perToken {
                let total = row.reduce(0, +)
                guard total >= minimumCount, row[e] > 0 else { continue }
                let lift = Double(row[e]) / Double(total) / base
                if lift > 1 { list.append(CharacteristicToken(token: t, occurrences: total, routedHere: row[e], lift: lift)) }
            }
            list.sort { ($0.lift, $0.occurrences, -$0.token) > ($1.lift, $1.occurrences, -$1.token) }
            return Array(list.prefix(count))
        }
    }
}
