// The routing-analysis statistics (Sources/MoE/Analysis/) against values worked
// out by hand on tiny tables, and the routing view against what MoELayer did.
import Foundation
import XCTest
@testable import MoE

final class AnalysisTests: XCTestCase {
    // MARK: Mutual information, by hand

    func testMutualInformationIsZeroForIndependentColumns() {
        // Every row has the same shares (1/4, 3/4): p(r, e) = p(r)·p(e) in every cell.
        let table = ContingencyTable(counts: [[1, 3], [2, 6], [5, 15]])
        XCTAssertEqual(table.mutualInformationBits, 0, accuracy: 1e-12)
        XCTAssertEqual(table.rowShares[1], [0.25, 0.75])
        XCTAssertEqual(table.expertTotals, [8, 24])
    }

    func testPerfectOneToOneRoutingCarriesLog2EBits() {
        // E equally common labels, each label always to its own expert: I = H = log2 E.
        for e in [2, 3, 4, 8] {
            var labels: [Int] = [], experts: [Int] = []
            for r in 0..<e { for _ in 0..<5 { labels.append(r); experts.append((r + 1) % e) } }
            let table = ContingencyTable(labels: labels, experts: experts, labelCount: e, expertCount: e)
            XCTAssertEqual(table.mutualInformationBits, log2(Double(e)), accuracy: 1e-12, "E = \(e)")
            XCTAssertEqual(table.labelEntropyBits, log2(Double(e)), accuracy: 1e-12)
        }
    }

    func testMutualInformationOfAHandWorkedTable() {
        // n = [[2, 0], [1, 1]], N = 4. p(r) = (1/2, 1/2), p(e) = (3/4, 1/4).
        //   cell (0,0): 2/4 · log2((2/4) / (1/2 · 3/4)) = 1/2 · log2(4/3)
        //   cell (1,0): 1/4 · log2((1/4) / (1/2 · 3/4)) = 1/4 · log2(2/3)
        //   cell (1,1): 1/4 · log2((1/4) / (1/2 · 1/4)) = 1/4 · log2(2)
        let expected = 0.5 * log2(4.0 / 3) + 0.25 * log2(2.0 / 3) + 0.25
        XCTAssertEqual(ContingencyTable(counts: [[2, 0], [1, 1]]).mutualInformationBits, expected, accuracy: 1e-12)
        XCTAssertEqual(expected, 0.3113, accuracy: 1e-4)
    }

    func testNegativeExpertsAreNotCounted() {
        let table = ContingencyTable(labels: [0, 1, 1], experts: [0, -1, 1], labelCount: 2, expertCount: 2)
        XCTAssertEqual(table.counts, [[1, 0], [0, 1]])
        XCTAssertEqual(table.total, 2)
    }

    // MARK: Permutation test

    func testPermutationPValueIsNearOneForShuffledDataAndNearZeroForAPlantedDependence() {
        var rng = Xoshiro256(seed: 7)
        let n = 2000
        let labels = (0..<n).map { _ in rng.below(4) }
        // Independent: experts drawn without looking at the label.
        let independent = (0..<n).map { _ in rng.below(4) }
        let null = PermutationTest.mutualInformation(labels: labels, experts: independent, labelCount: 4, expertCount: 4,
                                                     permutations: 400, seed: 1)
        print("independent:", null.summary)
        // Under the null hypothesis the p-value is uniform on (0, 1]; this seed's draw is typical.
        XCTAssertGreaterThan(null.pValue, 0.05)
        // The observed MI is of the size chance produces: about (R−1)(E−1)/(2N ln 2) = 0.0032 bits.
        XCTAssertEqual(null.chanceBits, 9 / (2 * Double(n) * log(2)), accuracy: 0.0015)
        XCTAssertLessThan(null.observedBits, null.chanceMaximumBits + 1e-12)

        // Exactly independent (every label's shares equal): observed MI is 0, every
        // shuffle reaches it, p = 1.
        let even = PermutationTest.mutualInformation(labels: [0, 0, 1, 1, 2, 2], experts: [0, 1, 0, 1, 0, 1],
                                                     labelCount: 3, expertCount: 2, permutations: 100, seed: 1)
        XCTAssertEqual(even.observedBits, 0, accuracy: 1e-12)
        XCTAssertEqual(even.pValue, 1)

        // Planted: the label decides the expert 30% of the time.
        let planted = labels.map { rng.uniform() < 0.3 ? $0 : rng.below(4) }
        let real = PermutationTest.mutualInformation(labels: labels, experts: planted, labelCount: 4, expertCount: 4,
                                                     permutations: 400, seed: 1)
        print("planted:", real.summary)
        XCTAssertEqual(real.atLeastObserved, 0)
        XCTAssertEqual(real.pValue, 1.0 / 401, accuracy: 1e-12)
        XCTAssertGreaterThan(real.observedBits, 20 * real.chanceBits)
    }

    func testTypeGroupingNullSeparatesAMeaningfulGroupingFromARandomOne() {
        // 12 token types, each always sent to expert type % 3. Grouping the
        // types by type % 3 names the expert exactly (log2 3 bits); a random
        // grouping of 4 types per label mixes experts and carries less.
        let tokens = (0..<600).map { $0 % 12 }
        let experts = tokens.map { $0 % 3 }
        let meaningful = (0..<12).map { $0 % 3 }
        let test = PermutationTest.typeGrouping(tokens: tokens, labelOfType: meaningful, experts: experts, labelCount: 3,
                                                expertCount: 3, permutations: 200, seed: 4)
        print("type grouping:", test.summary)
        XCTAssertEqual(test.observedBits, log2(3), accuracy: 1e-12)
        XCTAssertLessThan(test.chanceBits, 0.6 * log2(3))
        // Only a grouping that is a relabelling of the meaningful one ties it: (4!)³·3!/12! of all, rare in 200.
        XCTAssertLessThan(test.pValue, 0.05)
    }

    func testPermutationTestIsDeterministicForASeed() {
        let labels = [0, 0, 1, 1, 2, 2, 0, 1], experts = [1, 1, 0, 0, 2, 1, 1, 0]
        let a = PermutationTest.mutualInformation(labels: labels, experts: experts, labelCount: 3, expertCount: 3, permutations: 50, seed: 3)
        let b = PermutationTest.mutualInformation(labels: labels, experts: experts, labelCount: 3, expertCount: 3, permutations: 50, seed: 3)
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.observedBits, ContingencyTable(labels: labels, experts: experts, labelCount: 3, expertCount: 3).mutualInformationBits)
    }

    // MARK: Lift, frequency bands, stability

    func testCharacteristicTokensRankByLiftOverTheBaseRate() {
        // Expert 0 takes half of all tokens (base 1/2); it takes all 6 "a" (lift 2)
        // and 3 of 6 "b" (lift 1, not listed); "c" appears twice (below minimumCount).
        let tokens = [Int](repeating: 0, count: 6) + [Int](repeating: 1, count: 6) + [2, 2] + [Int](repeating: 3, count: 4)
        let experts = [Int](repeating: 0, count: 6) + [0, 0, 0, 1, 1, 1] + [1, 1] + [1, 1, 1, 1]
        let top = CharacteristicTokens.top(tokens: tokens, experts: experts, expertCount: 2, count: 3, minimumCount: 3)
        XCTAssertEqual(top[0].map(\.token), [0])
        XCTAssertEqual(top[0][0].lift, 2, accuracy: 1e-12)
        XCTAssertEqual(top[0][0].share, 1)
        // Expert 1: base 9/18; "d" (id 3) 4/4 → lift 2; "b" 3/6 → 1 (not listed); "c" too rare.
        XCTAssertEqual(top[1].map(\.token), [3])
    }

    func testFrequencyBandsSplitTheTrainingTextIntoThirds() {
        // Counts: id 0 ×1, id 1 ×2, id 2 ×3, id 3 ×6; N = 12; id 4 never seen.
        let tokens = [0] + [1, 1] + [2, 2, 2] + [Int](repeating: 3, count: 6)
        let bands = FrequencyBands(trainingTokens: tokens, vocabularySize: 5, bands: 3)
        // Ranked rarest first: 4 (0), 0 (1), 1 (2), 2 (3), 3 (6). Middles of the
        // cumulative stretches: 0, 0.5/12, 2/12, 4.5/12, 9/12 → bands 0, 0, 0, 1, 2.
        XCTAssertEqual(bands.bandOfToken, [0, 0, 1, 2, 0])
        XCTAssertEqual(bands.names, ["rare", "middle", "common"])
        XCTAssertEqual(bands.trainingSharePerBand, [3.0 / 12, 3.0 / 12, 6.0 / 12])
        let types = FrequencyBands(trainingTokens: tokens, vocabularySize: 5, bands: 5, balance: .types)
        XCTAssertEqual(types.bandOfToken, [1, 2, 3, 4, 0])
    }

    func testStabilityCurveIsOneAtTheEndAndFindsTheFirstStableStep() {
        let final = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
        var nineOfTen = final
        nineOfTen[9] = 3
        let curve = StabilityCurve(steps: [0, 100, 200, 300, 400],
                                   assignments: [[Int](repeating: 0, count: 10),    // 3 of 10 agree
                                                 final.map { $0 == 3 ? 2 : $0 },      // 8/10
                                                 nineOfTen,                            // 9/10
                                                 final, final])
        XCTAssertEqual(curve.agreement, [0.3, 0.8, 0.9, 1, 1])
        XCTAssertEqual(curve.firstStableStep(), 200)
        XCTAssertEqual(curve.firstStableStep(threshold: 1), 300)
        // A relapse restarts the count.
        let relapse = StabilityCurve(steps: [0, 1, 2], assignments: [final, [Int](repeating: 9, count: 10), final])
        XCTAssertEqual(relapse.firstStableStep(), 2)
    }

    // MARK: The routing view against the layer

    func testTokenRoutingIsWhatEachMoELayerDid() {
        var rng = Xoshiro256(seed: 5)
        var config = GPTConfig()
        config.vocabularySize = 20; config.contextLength = 8; config.layers = 3; config.width = 16; config.heads = 2
        config.hidden = 32; config.moeLayers = [0, 2]; config.experts = 4
        config.routing = RoutingSetup()   // top-2 softmax, renormalised
        let model = GPT(config: config, rng: &rng)
        let tokens = [3, 1, 4, 1, 5, 9, 2]
        let routing = model.routing(of: tokens, decode: { "t\($0)" })
        // Now the same forward by hand, reading lastRouting.
        model.setMode(training: false, progress: 1)
        _ = model.forward(tokens: tokens, batch: 1)
        XCTAssertEqual(routing.layers.map(\.layer), [0, 2])
        for (layer, (_, moe)) in zip(routing.layers, model.moeLayers) {
            let r = moe.lastRouting!
            for t in tokens.indices {
                let chosen = (0..<r.k).map { (r.experts[t * r.k + $0], r.weights.data[t * r.k + $0]) }.sorted { $0.1 > $1.1 }
                XCTAssertEqual(layer.experts[t], chosen.map(\.0))
                XCTAssertEqual(layer.weights[t], chosen.map(\.1))
            }
        }
        XCTAssertEqual(routing.tokens, tokens.map { "t\($0)" })
        // A stream longer than the context is routed in pieces of T, in order.
        let stream = Array(0..<19).map { $0 % 20 }
        let pieces = model.routeStream(stream, batch: 2)
        XCTAssertEqual(pieces[0].experts.count, 19)
        XCTAssertEqual(Array(pieces[1].experts[8..<16]), model.routeTokens(Array(stream[8..<16]))[1].experts)
        XCTAssertEqual(Array(pieces[1].experts[16...]), model.routeTokens(Array(stream[16...]))[1].experts)
    }
}

/// The probe record of LanguageModelTrainer: the same tokens every time, and a
/// curve that ends at 1.
final class ProbeRoutingTests: XCTestCase {
    func testStabilityCurveEndsAtOneAndTheProbeRoutesTheSameTokensEveryTime() {
        var rng = Xoshiro256(seed: 2)
        var config = GPTConfig()
        config.vocabularySize = 12; config.contextLength = 8; config.layers = 2; config.width = 16; config.heads = 2
        config.hidden = 32; config.moeLayers = [0, 1]; config.experts = 4
        let model = GPT(config: config, rng: &rng)
        let tokens = (0..<600).map { ($0 * 7 + $0 / 5) % 12 }
        let split = TokenSplit(tokens: tokens, cut: 480, context: 8, stride: 8)
        var t = LanguageModelTrainingConfig()
        t.batchSize = 4; t.steps = 9; t.evalInterval = 3; t.evalWindows = 4; t.probeWindows = 5; t.learningRate = 1e-2
        let trainer = LanguageModelTrainer(model: model, train: split.train, validation: split.validation, config: t)
        // The probe: 5 validation windows, evenly spaced, fixed before training.
        let n = split.validation.count
        XCTAssertEqual(trainer.probeInputs, (0..<5).map { split.validation.batch([$0 * n / 5]).inputs })
        _ = trainer.run()
        XCTAssertEqual(trainer.probeRecords.map(\.step), [0, 3, 6, 9])
        for record in trainer.probeRecords {
            XCTAssertEqual(record.topExperts.count, 2)
            XCTAssertTrue(record.topExperts.allSatisfy { $0.count == 5 * 8 })
        }
        // The last record is what the model does with those very tokens now.
        let now = model.routeStream(trainer.probeInputs.flatMap { $0 }).map(\.topExperts)
        XCTAssertEqual(trainer.probeRecords.last?.topExperts, now)
        for curve in trainer.stabilityCurves {
            XCTAssertEqual(curve.steps, [0, 3, 6, 9])
            XCTAssertEqual(curve.agreement.last, 1)
            XCTAssertNotNil(curve.firstStableStep())
            print("agreement with the final routing:", curve.agreement)
        }
        XCTAssertGreaterThan(trainer.probeSeconds, 0)
    }
}
