// Specialization: the label × expert analysis of one routed text, per MoE layer.
//
// The experiment of ../shared/seeds/003 ("feed it contrasting inputs … and watch
// whether the same experts activate") and of 000 (rare versus common tokens),
// as one computation with the label swapped:
//
//     route every token of the text (RoutedModel.routeStream)   top-1 expert per layer   [N]
//     label every token                                           domain, or frequency band [N]
//     per layer:  table     n[label][expert]             ContingencyTable    [R, E]
//                 test      I(label; expert), chance, p  PermutationTest
//                 given     I(label; expert | token)     the label beyond the token itself
//                 tokens    highest lift per expert      CharacteristicTokens
//
// Notebooks/part6-specialization.md, §3 and §4 run it on Tiny Shakespeare models.
//
// Legend: N tokens, R labels, E experts, T the model's longest sequence.
import Foundation

/// What one MoE layer's top-1 routing says about one labelling.
public struct LayerSpecialization {
    public let layer: Int
    /// n[label][expert].   [R, E]
    public let table: ContingencyTable
    public let test: PermutationTest
    /// I(label; expert | token) and its chance level, when the analysis was asked
    /// for it: what the label adds to the token itself.
    public let conditionalTest: PermutationTest?
    /// Per expert, the tokens with the highest lift.   [E][≤ count]
    public let characteristicTokens: [[CharacteristicToken]]

    /// The summary.json form: labels by name, token ids decoded with `decode`.
    public func json(labelNames: [String], decode: (Int) -> String) -> [String: Any] {
        ["layer": layer, "labels": labelNames, "counts": table.counts, "shares": table.rowShares,
         "expert_shares": table.expertShares, "label_entropy_bits": table.labelEntropyBits,
         "expert_entropy_bits": table.expertEntropyBits,
         "mutual_information": test.json,
         "conditional_mutual_information_given_token": conditionalTest?.json ?? NSNull(),
         "characteristic_tokens": characteristicTokens.map { list in
             list.map { ["token": decode($0.token), "id": $0.token, "occurrences": $0.occurrences,
                         "routed_here": $0.routedHere, "lift": $0.lift] as [String: Any] }
         }]
    }
}

public enum Specialization {
    /// The analysis of every MoE layer for one labelling of the routed tokens.
    ///
    /// - Parameters:
    ///   - layers: per MoE layer, the routing of all N tokens (`routeStream`).
    ///   - tokenIds: the N token ids, for the characteristic tokens.
    ///   - labels: the N labels, each in 0..<labelCount.
    ///   - conditionOnToken: also I(label; expert | token id) (pointless when the
    ///     label is a function of the token, as a frequency band is: then it is 0).
    public static func analyse(layers: [TokenRouting.Layer], tokenIds: [Int], labels: [Int], labelCount: Int,
                               expertCount: Int, permutations: Int = 1000, seed: UInt64 = 0,
                               topTokens: Int = 5, minimumCount: Int = 5,
                               conditionOnToken: Bool = false) -> [LayerSpecialization] {
        layers.enumerated().map { index, layer in
            let top = layer.topExperts
            return LayerSpecialization(
                layer: layer.layer,
                table: ContingencyTable(labels: labels, experts: top, labelCount: labelCount, expertCount: expertCount),
                // Each layer its own shuffles (seed + index), reproducible from the seed.
                test: .mutualInformation(labels: labels, experts: top, labelCount: labelCount, expertCount: expertCount,
                                         permutations: permutations, seed: seed &+ UInt64(index)),
                conditionalTest: conditionOnToken
                    ? .conditionalMutualInformation(labels: labels, experts: top, strata: tokenIds, labelCount: labelCount,
                                                    expertCount: expertCount, permutations: permutations,
                                                    seed: seed &+ UInt64(index) &+ 500)
                    : nil,
                characteristicTokens: CharacteristicTokens.top(tokens: tokenIds, experts: top, expertCount: expertCount,
                                                               count: topTokens, minimumCount: minimumCount))
        }
    }
}

extension RoutedModel {
    /// The routing of a token stream longer than one sequence: cut into
    /// consecutive pieces of `maximumSequenceLength` tokens (the last may be
    /// shorter), each routed on its own, `batch` pieces per forward pass; the
    /// layers come back concatenated in stream order. Each piece starts without
    /// context, as the model's training windows did.
    /// - Complexity: ⌈N / T⌉ sequences through the model.
    public func routeStream(_ ids: [Int], batch: Int = 16) -> [TokenRouting.Layer] {
        let t = max(1, maximumSequenceLength)
        var pieces: [[Int]] = []
        var start = 0
        while start < ids.count { pieces.append(Array(ids[start..<min(ids.count, start + t)])); start += t }
        var result: [TokenRouting.Layer] = []
        func append(_ routed: [[TokenRouting.Layer]]) {
            for layers in routed {
                if result.isEmpty { result = layers.map { TokenRouting.Layer(layer: $0.layer, experts: [], weights: []) } }
                for (i, l) in layers.enumerated() { result[i].experts += l.experts; result[i].weights += l.weights }
            }
        }
        let full = pieces.filter { $0.count == t }
        var i = 0
        while i < full.count { append(routeTokens(batch: Array(full[i..<min(full.count, i + max(1, batch))]))); i += batch }
        if let last = pieces.last, last.count < t { append([routeTokens(last)]) }
        return result
    }
}
