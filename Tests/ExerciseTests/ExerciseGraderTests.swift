// The grader, graded. A grader that passes everything teaches nothing, and one
// that fails a right answer teaches the wrong thing, so:
//
//   * every reference solution must pass every check of its exercise;
//   * every untouched skeleton must fail its exercise (a grader that cannot
//     fail is caught here);
//   * common mistakes, made on purpose by wrapping a reference answer, must
//     fail with the explanation a student would need ("did you forget the
//     2·lse factor?");
//   * the `exercises` command answers with the right exit status.
//
// A student who solves an exercise in Sources/Exercises changes its skeleton;
// the must-fail test then leaves that exercise alone instead of reporting the
// student's success as a grader bug. It recognises an untouched skeleton by a
// fingerprint of the file (below; the test prints the new one when a
// maintainer changes a skeleton on purpose).
import Foundation
import XCTest
import MoE
import ExerciseGrader
import Exercises
import ExerciseSolutions

final class ExerciseGraderTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    // MARK: - References pass, skeletons fail

    func testReferenceSolutionsPassEveryExercise() {
        for info in Grader.exercises {
            let result = Grader.grade(info.number, ReferenceSubmission())
            XCTAssertTrue(result.passed, "the reference solution fails its own exercise:\n\(result)")
            XCTAssertFalse(result.checks.isEmpty)
        }
    }

    /// FNV-1a, 64 bits, of a skeleton file as committed (line endings
    /// normalised to \n, so a Windows checkout has the same fingerprint).
    static let skeletonFingerprints: [Int: UInt64] = [
        1: 0xa638f6ccdfa0867e,
        2: 0x9a168aeba7e2476c,
        3: 0xf9ebe31fb3ffc50f,
        4: 0x0af640c546499d41,
        5: 0x4d909557932a620c,
        6: 0x291c65df5deda239,
    ]

    static func fingerprint(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.replacingOccurrences(of: "\r\n", with: "\n").utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        return hash
    }

    func testUntouchedSkeletonsFailEveryExercise() throws {
        var checked = 0
        for info in Grader.exercises {
            let text = try String(contentsOf: Self.root.appendingPathComponent(info.file), encoding: .utf8)
            let print = Self.fingerprint(text)
            guard print == Self.skeletonFingerprints[info.number] else {
                Swift.print("ExerciseGraderTests: \(info.file) is not the committed skeleton (fingerprint " +
                            "0x\(String(print, radix: 16))); not checking that it fails. If you changed the skeleton " +
                            "on purpose, put that fingerprint in skeletonFingerprints.")
                continue
            }
            let result = Grader.grade(info.number, YourSubmission())
            XCTAssertFalse(result.passed, "exercise \(info.number)'s untouched skeleton passes: the grader cannot fail\n\(result)")
            XCTAssertGreaterThan(result.failedCount, 0)
            checked += 1
        }
        if checked == 0 { throw XCTSkip("every skeleton has been edited (solved?); nothing to check") }
    }

    // MARK: - Mistakes made on purpose

    /// The reference answers with one piece replaced.
    struct Mutant: ExerciseSubmission {
        var reference = ReferenceSubmission()
        var label: String { "a deliberately wrong answer" }
        var switchRouter: ((Int, Bool) -> Router)?
        var zLoss: ((Float) -> LoadBalancing)?
        var limit: ((Int, Int, Int, Double) -> Int)?
        var capacityRouter: ((Router, Double) -> DropCountingRouter)?
        var load: (([Int]) -> LoadMeasurement)?
        var collapse: ((Bool, CollapseTask) -> CollapseRun)?
        var noisy: ((Int, Int, Int, UInt64) -> NoiseHoldingRouter)?
        var expertChoice: ((Int, Int, Double) -> Router)?

        func makeSwitchRouter(experts: Int, renormalize: Bool) -> Router {
            switchRouter?(experts, renormalize) ?? reference.makeSwitchRouter(experts: experts, renormalize: renormalize)
        }
        func makeZLoss(weight: Float) -> LoadBalancing { zLoss?(weight) ?? reference.makeZLoss(weight: weight) }
        func capacityLimit(tokens: Int, slots: Int, experts: Int, factor: Double) -> Int {
            limit?(tokens, slots, experts, factor) ?? reference.capacityLimit(tokens: tokens, slots: slots, experts: experts, factor: factor)
        }
        func makeCapacityRouter(base: Router, factor: Double) -> DropCountingRouter {
            capacityRouter?(base, factor) ?? reference.makeCapacityRouter(base: base, factor: factor)
        }
        func measureLoad(tokenCounts: [Int]) -> LoadMeasurement { load?(tokenCounts) ?? reference.measureLoad(tokenCounts: tokenCounts) }
        func runCollapseExperiment(balanced: Bool, task: CollapseTask) -> CollapseRun {
            collapse?(balanced, task) ?? reference.runCollapseExperiment(balanced: balanced, task: task)
        }
        func makeNoisyTopKRouter(modelDim: Int, experts: Int, k: Int, seed: UInt64) -> NoiseHoldingRouter {
            noisy?(modelDim, experts, k, seed) ?? reference.makeNoisyTopKRouter(modelDim: modelDim, experts: experts, k: k, seed: seed)
        }
        func makeExpertChoiceRouter(experts: Int, k: Int, capacityFactor: Double) -> Router {
            expertChoice?(experts, k, capacityFactor) ?? reference.makeExpertChoiceRouter(experts: experts, k: k, capacityFactor: capacityFactor)
        }
    }

    /// A router whose route is its base's, with its routing or its backward changed.
    final class Altered: Router {
        let base: Router
        var alterRouting: (Routing) -> Routing = { $0 }
        var alterBackward: (Tensor) -> Tensor = { $0 }
        var dropProbabilityGradient = false
        /// Scales the dL/dp a balancing loss sends before the base sees it (1: unchanged).
        var probabilityGradientScale: Float = 1
        init(_ base: Router) { self.base = base }
        var name: String { base.name }
        var expertCount: Int { base.expertCount }
        var slots: Int { base.slots }
        var namedParameters: [(name: String, parameter: Parameter)] { base.namedParameters }
        func inputGradient() -> Tensor? { base.inputGradient() }
        func route(logits: Tensor, context: RoutingContext) -> Routing { alterRouting(base.route(logits: logits, context: context)) }
        func backward(weightGradient: Tensor, probabilityGradient: Tensor?) -> Tensor {
            alterBackward(base.backward(weightGradient: weightGradient,
                                        probabilityGradient: dropProbabilityGradient ? nil
                                            : probabilityGradient.map { $0 * probabilityGradientScale }))
        }
    }

    /// Grades `mutant` on `exercise` and asserts that it fails with `phrase` in the report.
    func assertCaught(_ exercise: Int, _ mutant: Mutant, saying phrase: String, _ what: String,
                      file: StaticString = #filePath, line: UInt = #line) {
        let result = Grader.grade(exercise, mutant)
        XCTAssertFalse(result.passed, "\(what) passes exercise \(exercise)\n\(result)", file: file, line: line)
        let messages = result.checks.compactMap(\.message).joined(separator: "\n")   // unwrapped, unlike the report
        XCTAssertTrue(messages.contains(phrase),
                      "\(what): the report does not say \"\(phrase)\"\n\(result)", file: file, line: line)
    }

    func testExercise1CatchesWrongBackwards() {
        let reference = ReferenceSubmission()
        var m = Mutant()
        m.switchRouter = { e, r in let a = Altered(reference.makeSwitchRouter(experts: e, renormalize: r)); a.alterBackward = { $0 * 2 }; return a }
        assertCaught(1, m, saying: "2.0000 × the right value", "a backward twice too large")
        m.switchRouter = { e, r in let a = Altered(reference.makeSwitchRouter(experts: e, renormalize: r)); a.alterBackward = { $0 * -1 }; return a }
        assertCaught(1, m, saying: "the sign is flipped", "a backward with the wrong sign")
        m.switchRouter = { e, r in let a = Altered(reference.makeSwitchRouter(experts: e, renormalize: r)); a.dropProbabilityGradient = true; return a }
        assertCaught(1, m, saying: "add it to dp before the softmax backward", "a backward that ignores dL/dp")
        // exercises.md §1 says where it fails: the balancing check and the layer (whose Switch loss sends dL/dp), not the task loss's.
        XCTAssertEqual(Set(failedChecks(1, m)), ["backward: the balancing loss's dL/dp is used", "inside an MoELayer with the Switch loss"])
        m.switchRouter = { e, _ in reference.makeSwitchRouter(experts: e, renormalize: true) }
        assertCaught(1, m, saying: "that is the renormalised weight", "renormalised weights for a Switch router")
    }

    /// The titles of the checks that failed.
    func failedChecks(_ exercise: Int, _ mutant: Mutant) -> [String] {
        Grader.grade(exercise, mutant).checks.filter { $0.status == .failed }.map(\.title)
    }

    /// A backward off by 1% — every element, or only the balancing loss's share
    /// — must fail, in the check of the gradient that is off, and say so.
    func testExercise1CatchesABackwardOnePercentOff() {
        let reference = ReferenceSubmission()
        var m = Mutant()
        for factor: Float in [0.99, 1.01] {
            m.switchRouter = { e, r in let a = Altered(reference.makeSwitchRouter(experts: e, renormalize: r)); a.alterBackward = { $0 * factor }; return a }
            assertCaught(1, m, saying: "every element is \(String(format: "%.4f", factor)) × the right value",
                         "a backward scaled by \(factor)")
            let failed = failedChecks(1, m)
            XCTAssertTrue(failed.contains("backward: the task loss's dL/dlogits"), "\(factor): \(failed)")
            XCTAssertTrue(failed.contains("backward: the balancing loss's dL/dp is used"), "\(factor): \(failed)")
        }
        // Only the balancing loss's share is 1% off: the task-loss check passes, the balancing one names it.
        m.switchRouter = { e, r in let a = Altered(reference.makeSwitchRouter(experts: e, renormalize: r)); a.probabilityGradientScale = 0.99; return a }
        assertCaught(1, m, saying: "0.9900 × the right value", "a balancing gradient scaled by 0.99")
        let failed = failedChecks(1, m)
        XCTAssertTrue(failed.contains("backward: the balancing loss's dL/dp is used"), "\(failed)")
        XCTAssertFalse(failed.contains("backward: the task loss's dL/dlogits"), "\(failed)")
        // 0.98, which only the layer check used to catch, is now caught where it is wrong.
        m.switchRouter = { e, r in let a = Altered(reference.makeSwitchRouter(experts: e, renormalize: r)); a.alterBackward = { $0 * 0.98 }; return a }
        XCTAssertTrue(failedChecks(1, m).contains("backward: the task loss's dL/dlogits"))
    }

    /// The other exercises with a gradient: 1% off fails them too.
    func testEveryGradientOnePercentOffFails() {
        let reference = ReferenceSubmission()
        var m = Mutant()
        m.zLoss = { w in AlteredZLoss(reference.makeZLoss(weight: w)) { term, _ in
            var t = term
            t.logitGradient = term.logitGradient.map { $0 * 0.99 }
            return t
        } }
        XCTAssertFalse(Grader.grade(2, m).passed, "a z-loss gradient scaled by 0.99 passes exercise 2")
        m = Mutant()
        m.noisy = { d, e, k, s in ScaledNoisy(reference.makeNoisyTopKRouter(modelDim: d, experts: e, k: k, seed: s), 0.99) }
        XCTAssertFalse(Grader.grade(5, m).passed, "a noisy router's backward scaled by 0.99 passes exercise 5")
        m.noisy = { d, e, k, s in ScaledNoisy(reference.makeNoisyTopKRouter(modelDim: d, experts: e, k: k, seed: s), 1, parameterFactor: 0.99) }
        XCTAssertFalse(Grader.grade(5, m).passed, "a noise network whose weight gradients are 1% off passes exercise 5")
        m = Mutant()
        m.expertChoice = { e, k, f in let a = Altered(reference.makeExpertChoiceRouter(experts: e, k: k, capacityFactor: f)); a.alterBackward = { $0 * 0.99 }; return a }
        XCTAssertFalse(Grader.grade(6, m).passed, "an expert-choice backward scaled by 0.99 passes exercise 6")
    }

    /// A noisy router whose dL/dlogits and dL/dx are scaled by `factor`, and
    /// what its backward adds to its own parameters' gradients by `parameterFactor`.
    final class ScaledNoisy: NoiseHoldingRouter {
        let base: NoiseHoldingRouter
        let factor: Float, parameterFactor: Float
        init(_ base: NoiseHoldingRouter, _ factor: Float, parameterFactor: Float = 1) {
            self.base = base; self.factor = factor; self.parameterFactor = parameterFactor
        }
        var fixedNoise: Tensor? { get { base.fixedNoise } set { base.fixedNoise = newValue } }
        var name: String { base.name }
        var expertCount: Int { base.expertCount }
        var slots: Int { base.slots }
        var namedParameters: [(name: String, parameter: Parameter)] { base.namedParameters }
        func inputGradient() -> Tensor? { base.inputGradient().map { $0 * factor } }
        func route(logits: Tensor, context: RoutingContext) -> Routing { base.route(logits: logits, context: context) }
        func backward(weightGradient: Tensor, probabilityGradient: Tensor?) -> Tensor {
            let before = base.namedParameters.map { $0.parameter.grad }
            let g = base.backward(weightGradient: weightGradient, probabilityGradient: probabilityGradient) * factor
            for (p, old) in zip(base.namedParameters.map(\.parameter), before) {
                for i in 0..<p.grad.count { p.grad.data[i] = old.data[i] + parameterFactor * (p.grad.data[i] - old.data[i]) }
            }
            return g
        }
    }

    /// A z-loss that computes the reference term and then changes it.
    final class AlteredZLoss: LoadBalancing {
        let base: LoadBalancing
        let change: (BalancingTerm, Tensor) -> BalancingTerm
        init(_ base: LoadBalancing, _ change: @escaping (BalancingTerm, Tensor) -> BalancingTerm) { self.base = base; self.change = change }
        var name: String { base.name }
        var weight: Float { get { base.weight } set { base.weight = newValue } }
        func evaluate(routing: Routing, logits: Tensor) -> BalancingTerm { change(base.evaluate(routing: routing, logits: logits), logits) }
        func referenceValues(experts: Int, k: Int) -> (balanced: Double, collapsed: Double)? { nil }
    }

    func testExercise2CatchesTheUsualMistakes() {
        let reference = ReferenceSubmission()
        var m = Mutant()
        // Returning p·(1/N) instead of 2·lse·p/N: "forgot the 2·lse factor".
        m.zLoss = { w in AlteredZLoss(reference.makeZLoss(weight: w)) { term, z in
            var t = term
            t.logitGradient = softmaxRows(z) * (1 / Float(z.shape[0]))
            return t
        } }
        assertCaught(2, m, saying: "did you forget the 2·lse factor?", "a z-loss gradient without 2·lse")
        // Summing over tokens instead of averaging.
        m.zLoss = { w in AlteredZLoss(reference.makeZLoss(weight: w)) { term, z in
            var t = term
            t.value *= Double(z.shape[0])
            t.logitGradient = term.logitGradient.map { $0 * Float(z.shape[0]) }
            return t
        } }
        assertCaught(2, m, saying: "divide by N", "a z-loss summed over tokens")
        // The gradient on p instead of on the logits.
        m.zLoss = { w in AlteredZLoss(reference.makeZLoss(weight: w)) { term, _ in
            BalancingTerm(value: term.value, probabilityGradient: term.logitGradient)
        } }
        assertCaught(2, m, saying: "logitGradient is nil", "a z-loss gradient in the wrong field")
    }

    func testExercise3CatchesRoundingAndOrder() {
        let reference = ReferenceSubmission()
        var m = Mutant()
        m.limit = { n, k, e, f in max(1, Int(f * Double(n * k) / Double(e))) }
        assertCaught(3, m, saying: "round up", "a capacity rounded down")
        // Later tokens first: the right number of drops, in the wrong places.
        m = Mutant()
        m.capacityRouter = { base, f in
            let reversed = Altered(base)
            reversed.alterRouting = { r in
                let n = r.tokenCount, k = r.k
                var flipped = Routing(k: k, probabilities: r.probabilities,
                                      experts: (0..<(n * k)).map { r.experts[(n - 1 - $0 / k) * k + $0 % k] },
                                      weights: r.weights, dropped: r.dropped.map { d in (0..<(n * k)).map { d[(n - 1 - $0 / k) * k + $0 % k] } })
                flipped = Capacity(factor: f).apply(to: flipped, activeExperts: Double(k))
                var out = r
                out.dropped = (0..<(n * k)).map { flipped.dropped![(n - 1 - $0 / k) * k + $0 % k] }
                return out
            }
            return CountingWrapper(reversed)
        }
        assertCaught(3, m, saying: "it must not be dropped", "drops in reverse token order")
        _ = reference
    }

    /// Counts the drops of whatever it wraps (for the reverse-order mutant).
    final class CountingWrapper: DropCountingRouter {
        let base: Router
        private(set) var droppedSlotsSoFar = 0
        init(_ base: Router) { self.base = base }
        var name: String { base.name }
        var expertCount: Int { base.expertCount }
        var slots: Int { base.slots }
        func route(logits: Tensor, context: RoutingContext) -> Routing {
            let r = base.route(logits: logits, context: context)
            droppedSlotsSoFar += r.droppedCount
            return r
        }
        func backward(weightGradient: Tensor, probabilityGradient: Tensor?) -> Tensor {
            base.backward(weightGradient: weightGradient, probabilityGradient: probabilityGradient)
        }
    }

    func testExercise4CatchesASampleVarianceAndARunThatKeepsTheLoss() {
        let reference = ReferenceSubmission()
        var m = Mutant()
        m.load = { counts in
            var x = reference.measureLoad(tokenCounts: counts)
            let e = Double(counts.count)
            x.coefficientOfVariation *= (e / (e - 1)).squareRoot()
            return x
        }
        assertCaught(4, m, saying: "divided the variance by E − 1", "a CV from the sample variance")
        m = Mutant()
        m.collapse = { _, task in reference.runCollapseExperiment(balanced: true, task: task) }
        assertCaught(4, m, saying: "remove it (balancing: [])", "an experiment that never removes the loss")
    }

    func testExercise5CatchesAMissingInputGradient() {
        let reference = ReferenceSubmission()
        var m = Mutant()
        m.noisy = { d, e, k, s in NoInputGradient(reference.makeNoisyTopKRouter(modelDim: d, experts: e, k: k, seed: s)) }
        assertCaught(5, m, saying: "inputGradient() must return the noise network's dL/dx", "a noise network without dL/dx")
    }

    /// `--resume` saves a router's generator (Router.swift, `randomState`): the
    /// exercise-5 routers draw ε, so both keep their position, refuse a
    /// state no generator can have, and after a restore draw the same ε again.
    func testExercise5RoutersSaveTheirNoiseGenerator() throws {
        let makers: [(String, () -> NoiseHoldingRouter)] = [
            ("reference", { ReferenceSubmission().makeNoisyTopKRouter(modelDim: 6, experts: 4, k: 2, seed: 3) }),
            ("skeleton", { YourSubmission().makeNoisyTopKRouter(modelDim: 6, experts: 4, k: 2, seed: 3) }),
        ]
        for (label, make) in makers {
            let router = make()
            let saved = router.randomState
            XCTAssertEqual(saved.count, 4, label)
            XCTAssertThrowsError(try router.restoreRandomState([0, 0, 0, 0]), label)
            XCTAssertThrowsError(try router.restoreRandomState([1, 2]), label)
            try router.restoreRandomState(saved)
            XCTAssertEqual(router.randomState, saved, label)
        }
        // The reference routes: the same state gives the same noisy choice.
        let router = ReferenceSubmission().makeNoisyTopKRouter(modelDim: 6, experts: 4, k: 2, seed: 3)
        var rng = Xoshiro256(seed: 9)
        let x = Tensor.normal([5, 6], rng: &rng), z = Tensor.normal([5, 4], rng: &rng)
        let context = RoutingContext(training: true, input: x)
        let before = router.randomState
        let first = router.route(logits: z, context: context)
        XCTAssertNotEqual(router.randomState, before, "routing in training draws ε")
        try router.restoreRandomState(before)
        let again = router.route(logits: z, context: context)
        XCTAssertEqual(first.experts, again.experts)
        XCTAssertEqual(first.weights.data, again.weights.data)
    }

    /// A noisy router that forgets its share of dL/dx.
    final class NoInputGradient: NoiseHoldingRouter {
        let base: NoiseHoldingRouter
        init(_ base: NoiseHoldingRouter) { self.base = base }
        var fixedNoise: Tensor? { get { base.fixedNoise } set { base.fixedNoise = newValue } }
        var name: String { base.name }
        var expertCount: Int { base.expertCount }
        var slots: Int { base.slots }
        var namedParameters: [(name: String, parameter: Parameter)] { base.namedParameters }
        func route(logits: Tensor, context: RoutingContext) -> Routing { base.route(logits: logits, context: context) }
        func backward(weightGradient: Tensor, probabilityGradient: Tensor?) -> Tensor {
            base.backward(weightGradient: weightGradient, probabilityGradient: probabilityGradient)
        }
    }

    func testExercise6CatchesRenormalisedWeights() {
        let reference = ReferenceSubmission()
        var m = Mutant()
        m.expertChoice = { e, k, f in
            let a = Altered(reference.makeExpertChoiceRouter(experts: e, k: k, capacityFactor: f))
            a.alterRouting = { r in
                var w = r.weights
                for t in 0..<r.tokenCount {
                    let sum = (0..<r.k).reduce(Float(0)) { $0 + w[t, $1] }
                    if sum > 0 { for j in 0..<r.k { w[t, j] /= sum } }
                }
                return Routing(k: r.k, probabilities: r.probabilities, experts: r.experts, weights: w)
            }
            return a
        }
        assertCaught(6, m, saying: "expert choice does not renormalise", "renormalised expert-choice weights")
    }

    // MARK: - The command

    struct Outcome { var status: Int32; var stdout: String; var stderr: String }

    /// Runs the built `exercises` with `arguments`, at most 60 s.
    func run(_ arguments: [String]) throws -> Outcome {
        let bundle = Bundle(for: Self.self).bundleURL
        let candidates = [bundle.deletingLastPathComponent(), bundle, Self.root.appendingPathComponent(".build/debug")]
            .map { $0.appendingPathComponent("exercises") }
        guard let program = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
            throw XCTSkip("exercises not built; looked in " + candidates.map(\.path).joined(separator: ", "))
        }
        let process = Process()
        process.executableURL = program
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Both outputs are small (a few kB); read them after reading to end, which waits for the child.
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Outcome(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                       stderr: String(decoding: stderr, as: UTF8.self))
    }

    func testCommandExitStatusAndMessages() throws {
        let list = try run(["list"])
        XCTAssertEqual(list.status, 0)
        XCTAssertTrue(list.stdout.contains("Sources/Exercises/Exercise6-ExpertChoiceRouter.swift"), list.stdout)

        let reference = try run(["check", "all", "--reference"])
        XCTAssertEqual(reference.status, 0, reference.stdout + reference.stderr)
        XCTAssertTrue(reference.stdout.contains("6 of 6 exercises pass"), reference.stdout)

        for bad in [["check", "9"], ["check"], ["frobnicate"], ["check", "1", "--fast"], []] {
            let outcome = try run(bad)
            XCTAssertEqual(outcome.status, 2, "exercises \(bad.joined(separator: " ")): \(outcome.stderr)")
            XCTAssertTrue(outcome.stderr.hasPrefix("exercises: "), outcome.stderr)
            XCTAssertTrue(outcome.stderr.contains("exercises --help"), outcome.stderr)
            XCTAssertEqual(outcome.stderr.split(separator: "\n").count, 1, "one line, not the usage: \(outcome.stderr)")
            XCTAssertEqual(outcome.stdout, "")
        }
        let typo = try run(["check", "1", "--refrence"])
        XCTAssertEqual(typo.status, 2)
        XCTAssertTrue(typo.stderr.contains("did you mean --reference?"), typo.stderr)

        let skeleton = Self.root.appendingPathComponent(Grader.exercises[1].file)
        if Self.fingerprint(try String(contentsOf: skeleton, encoding: .utf8)) == Self.skeletonFingerprints[2] {
            let failing = try run(["check", "2"])
            XCTAssertEqual(failing.status, 1, failing.stdout)
            XCTAssertTrue(failing.stdout.contains("exercise 2: "), failing.stdout)
        }
    }

    // MARK: - Crashes and hangs, reported in words

    /// A stand-in child: a shell that announces a check as `grade-one` does, then hangs or crashes.
    func child(_ script: String, timeLimit: Double) throws -> GradingOutcome {
        let announce = "printf '%s\\n' \"\(GradingProcess.marker)backward: the task loss's dL/dlogits\" >&2; "
        return try XCTUnwrap(GradingProcess.run(URL(fileURLWithPath: "/bin/sh"), arguments: ["-c", announce + script],
                                                timeLimit: timeLimit))
    }

    func testAHangIsStoppedAndNamesTheCheck() throws {
        let start = Date()
        var slowNotice: String?? = nil
        let outcome = try XCTUnwrap(GradingProcess.run(
            URL(fileURLWithPath: "/bin/sh"),
            arguments: ["-c", "printf '%s\\n' \"\(GradingProcess.marker)backward: the task loss's dL/dlogits\" >&2; sleep 30"],
            timeLimit: 0.8, slowAfter: 0.3, onSlow: { slowNotice = .some($0) }))
        XCTAssertEqual(slowNotice, .some("backward: the task loss's dL/dlogits"), "a slow check is announced while it runs")
        XCTAssertLessThan(Date().timeIntervalSince(start), 10, "the time limit was not applied")
        XCTAssertEqual(outcome.ending, .timedOut(seconds: 0.8))
        XCTAssertEqual(outcome.lastCheck, "backward: the task loss's dL/dlogits")
        let report = try XCTUnwrap(GradingProcess.failureReport(exercise: 1, outcome))
        XCTAssertTrue(report.hasPrefix("Exercise 1 — "), report)
        let text = report.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
        XCTAssertTrue(text.contains("still running after 0.8 s in the check 'backward: the task loss's dL/dlogits'"), report)
    }

    func testACrashLeadsWithTheExplanationAndAShortBacktrace() throws {
        // Fifty frames, two of them in a student's file, then a signal.
        var frames = "echo 'Fatal error: Index out of range' >&2; echo '*** Program crashed: Illegal instruction ***' >&2; "
        for i in 0..<50 {
            let place = i == 3 || i == 4 ? "/w/Sources/Exercises/Exercise1-SwitchRouter.swift:4\(i)" : "/usr/lib/swift/libswiftCore.so"
            frames += "echo '  \(i) [ra]    0x000055a3522ca965 frame\(i) + 20 in exercises at \(place)' >&2; "
        }
        let outcome = try child(frames + "kill -ILL $$", timeLimit: 20)
        XCTAssertEqual(outcome.ending, .crashed(4))
        let report = try XCTUnwrap(GradingProcess.failureReport(exercise: 1, outcome))
        let lines = report.split(separator: "\n").map(String.init)
        XCTAssertTrue(lines[0].hasPrefix("Exercise 1 — ") && lines[0].contains("crashed"), report)
        let explanation = lines[1...2].map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
        XCTAssertTrue(explanation.contains("your code stopped the program in the check 'backward: the task loss's dL/dlogits'"), report)
        XCTAssertTrue(report.contains("Fatal error: Index out of range"), report)
        XCTAssertTrue(report.contains("frame3 at /w/Sources/Exercises/Exercise1-SwitchRouter.swift:43"), report)
        XCTAssertFalse(report.contains("libswiftCore"), "frames outside the student's files: \(report)")
        XCTAssertLessThan(lines.count, 14, report)
    }
}
