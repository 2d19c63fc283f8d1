// Your own router on the command line (RouterRegistry.swift): a router written
// outside the library, registered under a name, is built by RoutingSetup like
// a built-in one, trained, and described truthfully (its own k, its own name)
// in the one-line summary, summary.json and the balancing reference values.
// Also here: which routers a decoder may use (RoutingSetup+Decoder.swift),
// with the whole-model causality test run for every router the GPT accepts.
//
// Legend: N tokens, E experts.
import Foundation
import XCTest
@testable import MoE

/// A top-1 router written the way a student would write exercise 1: softmax,
/// argmax, w = p, and the softmax backward. Counts its backward calls.
final class StudentTopOneRouter: Router {
    let expertCount: Int
    private var probabilities = Tensor.zeros([0, 0])   // p [N, E]
    private var chosen: [Int] = []                      // e(n) [N]
    private(set) var backwardCalls = 0
    init(experts: Int) { expertCount = experts }
    var name: String { "student-top1" }
    var slots: Int { 1 }

    func route(logits: Tensor, context: RoutingContext) -> Routing {
        let n = logits.shape[0], e = expertCount
        let p = softmaxRows(logits)                     // [N, E]
        chosen = (0..<n).map { t in (0..<e).reduce(0) { p[t, $1] > p[t, $0] ? $1 : $0 } }
        probabilities = p
        var w = Tensor.zeros([n, 1])
        for t in 0..<n { w[t, 0] = p[t, chosen[t]] }
        return Routing(k: 1, probabilities: p, experts: chosen, weights: w)
    }

    /// w = p[n, e(n)]: dp[n, e(n)] += dw[n]; then dz = softmax backward of dp.
    func backward(weightGradient: Tensor, probabilityGradient: Tensor?) -> Tensor {
        backwardCalls += 1
        var dp = probabilityGradient ?? .zeros(probabilities.shape)
        for t in 0..<chosen.count { dp[t, chosen[t]] += weightGradient[t, 0] }
        return softmaxRowsBackward(probabilities: probabilities, outputGradient: dp)
    }
}

final class RouterRegistryTests: XCTestCase {
    override class func setUp() {
        super.setUp()
        RouterRegistry.register("student-top1", about: "a test's top-1 router") { r in StudentTopOneRouter(experts: r.experts) }
    }

    /// The command line's words → a setup that describes the router that runs.
    func testARegisteredRouterIsAFlagWordWithItsOwnK() throws {
        var flags = RoutingFlags()
        var args = ArgumentReader(["--router", "student-top1"])
        let flag = try XCTUnwrap(args.next())
        XCTAssertTrue(try flags.parse(flag, from: &args))
        flags.finish()
        let setup = flags.applied(to: RoutingSetup())   // the walkthrough's default: top-2
        XCTAssertEqual(setup.k, 2)
        XCTAssertNoThrow(try setup.validate(experts: 4))
        let resolved = setup.resolvingRegisteredRouter(experts: 4, modelDim: 16)
        XCTAssertEqual(resolved.k, 1, "a top-1 router is reported as k = 1, not the default top-2")
        XCTAssertEqual(resolved.summary, "student-top1 k=1, switch α=0.1")
        XCTAssertEqual(resolved.json["router"] as? String, "student-top1")
        XCTAssertEqual(resolved.json["k"] as? Int, 1)
        // The balancing reference a report prints is top-1's (1 at balance), not top-2's.
        let reference = try XCTUnwrap(SwitchBalancing(weight: 0.1).referenceValues(experts: 4, k: resolved.k))
        XCTAssertEqual(reference.balanced, 1, accuracy: 1e-9)
        // An unknown word still fails, naming the registered ones.
        var bad = ArgumentReader(["--router", "student-top2"])
        _ = bad.next()
        XCTAssertThrowsError(try flags.parse("--router", from: &bad)) { error in
            XCTAssertTrue("\(error)".contains("student-top1"), "\(error)")
            XCTAssertTrue("\(error)".contains("did you mean student-top1?"), "\(error)")
        }
        XCTAssertTrue(RoutingFlags.usage().contains("--router student-top1"), "--help lists the registered router")
    }

    /// Trained through RoutingSetup.makeLayer, as mnist-moe trains it: the
    /// layer holds the student's router, its backward runs, and the loss falls.
    func testAStudentRouterTrainsThroughTheCommandLinePath() throws {
        var setup = RoutingSetup()
        setup.router = "student-top1"
        setup = setup.resolvingRegisteredRouter(experts: 4, modelDim: 16)
        // Two classes of 16-pixel images: bright left half or bright right half.
        var rng = Xoshiro256(seed: 5)
        var images: [Float] = [], labels: [Int] = []
        for i in 0..<128 {
            let label = i % 2
            labels.append(label)
            for p in 0..<16 { images.append(((p < 8) == (label == 0) ? 0.8 : 0.1) + rng.uniform(0, 0.2)) }
        }
        let data = LabeledImages(images: images, labels: labels, pixels: 16)
        var weights = Xoshiro256(seed: 6)
        let model = MoEClassifier(inputSize: 16, hidden: 16, classes: 2, rng: &weights) { rng in
            setup.makeLayer(modelDim: 16, hiddenDim: 8, experts: 4, seed: 6, rng: &rng)
        }
        let router = try XCTUnwrap(model.moe.router as? StudentTopOneRouter, "the layer holds the registered router")
        var config = TrainingConfig()
        config.epochs = 3
        config.batchSize = 16
        config.learningRate = 1e-2
        let trainer = Trainer(model: model, config: config)
        let first = trainer.trainEpoch(on: data)
        _ = trainer.trainEpoch(on: data)
        let last = trainer.trainEpoch(on: data)
        XCTAssertGreaterThan(router.backwardCalls, 0, "the student's backward never ran")
        XCTAssertLessThan(last.trainLoss, first.trainLoss, "training with the student's router did not lower the loss")
        XCTAssertEqual(model.moe.router.slots, 1)
    }

    // MARK: - Decoders

    func testNonCausalRoutingsAreRefusedForADecoder() {
        var setup = RoutingSetup()
        setup.router = "expert-choice"
        XCTAssertTrue(setup.decoderProblem?.contains("--router expert-choice cannot train a decoder") == true)
        for overflow in [Capacity.Overflow.score, .choiceOrder] {
            var s = RoutingSetup()
            s.capacityFactor = 1.25
            s.overflow = overflow
            XCTAssertNotNil(s.decoderProblem, "\(overflow)")
        }
        // A registered router that looks at the whole batch is caught by trying it.
        RouterRegistry.register("test-batch-choice", about: "expert choice, registered") { r in
            ExpertChoiceRouter(experts: r.experts, k: r.k, capacityFactor: 1)
        }
        var registered = RoutingSetup()
        registered.router = "test-batch-choice"
        XCTAssertNotNil(registered.decoderProblem)
    }

    /// Every routing the GPT accepts keeps it causal: the logits at position t
    /// do not depend on tokens after t, exactly.
    func testTheGPTIsCausalForEveryRouterItAccepts() {
        var setups: [RoutingSetup] = []
        for name in RouterRegistry.allNames {
            var s = RoutingSetup()
            s.router = name
            guard s.decoderProblem == nil else { continue }
            setups.append(s)
        }
        var capacity = RoutingSetup()
        capacity.capacityFactor = 1.0   // token order, the default overflow
        setups.append(capacity)
        var biased = RoutingSetup()
        biased.balancing = ["bias"]
        setups.append(biased)
        XCTAssertTrue(setups.map(\.router).contains("student-top1"))
        XCTAssertFalse(setups.map(\.router).contains("expert-choice"))
        for setup in setups {
            var rng = Xoshiro256(seed: 37)
            var config = GPTConfig()
            config.vocabularySize = 13; config.contextLength = 8; config.width = 16; config.heads = 2
            config.hidden = 24; config.layers = 2; config.moeLayers = [1]; config.experts = 4
            config.routing = setup.resolvingRegisteredRouter(experts: 4, modelDim: 16)
            let model = GPT(config: config, rng: &rng)
            model.setMode(training: false, progress: 1)
            assertCausal(model, rng: &rng, setup.summary)
        }
    }
}
