// Tests for paths the rest of the suite did not reach: a mutation run (small
// deliberate bugs, one at a time) left these alive, so each test here fails on
// one such bug.
//   * the threaded matmul's row strips (every other threaded test split by columns
//     or stayed under the threshold);
//   * Adam's per-thread chunking of a large parameter (no test parameter reached
//     Adam.parallelThreshold weights), and its plan for many parameters;
//   * the data order of epoch 1 (tests compared runs with each other only);
//   * capacity ⌈·⌉ versus ⌊·⌋ (every test product was an integer);
//   * where ε goes in Adam (a hand-computed step with a gradient too large for ε to matter);
//   * the threaded paths of the cross-entropy (rows split) and of Linear's backward
//     (dL/dx and dL/dW side by side), which only GPT-sized batches take: written
//     with those paths, and checked the same way (a dropped row, and dL/dW
//     written instead of added, each fail them).
import XCTest
@testable import MoE

final class BlindSpotTests: XCTestCase {
    // MARK: Threaded matmul

    /// Records the splits `Gemm.multiply` chooses while `body` runs.
    private func splits(_ body: () -> Void) -> [Gemm.Split] {
        final class Box: @unchecked Sendable { var splits: [Gemm.Split] = []; let lock = NSLock() }
        let box = Box()
        Gemm.splitObserver = { s in box.lock.lock(); box.splits.append(s); box.lock.unlock() }
        defer { Gemm.splitObserver = nil }
        body()
        return box.splits
    }

    /// Products above the 2²⁴-FLOP threshold with fewer output columns than one
    /// 32-wide tile, so the strips must be rows: A·Bᵀ (dot-product kernel), A·B
    /// (B repacked as rows), Aᵀ·B (packed kernel; with one thread, Cᵀ = Bᵀ·A
    /// instead). Each against the naive product, with 2 and 3 threads (3 does
    /// not divide the row tiles evenly), and the split checked to be the one meant.
    func testRowStripsOfThreadedProductsMatchTheNaiveProduct() {
        var rng = Xoshiro256(seed: 10)
        let cases: [(m: Int, k: Int, n: Int, ta: Bool, tb: Bool)] = [
            (4096, 256, 27, false, true),    // A·Bᵀ
            (1024, 2048, 16, false, false),  // A·B
            (2048, 1024, 8, true, false),    // Aᵀ·B
        ]
        for c in cases {
            XCTAssertGreaterThanOrEqual(2 * c.m * c.n * c.k, Gemm.parallelThreshold, "\(c): must be above the threshold")
            let a = Tensor.uniform(c.ta ? [c.k, c.m] : [c.m, c.k], low: -1, high: 1, rng: &rng)
            let b = Tensor.uniform(c.tb ? [c.n, c.k] : [c.k, c.n], low: -1, high: 1, rng: &rng)
            let slow = naiveMatmul(a, b, transposeA: c.ta, transposeB: c.tb)
            let tolerance = 1e-5 * Float(c.k + 1).squareRoot()
            var single = Tensor.zeros([0])
            let serialSplits = splits { single = matmul(a, b, transposeA: c.ta, transposeB: c.tb, threads: 1) }
            XCTAssertEqual(serialSplits, [c.ta ? .transposed : .serial], "\(c) on one thread")
            for threads in [2, 3] {
                var fast = Tensor.zeros([0])
                let chosen = splits { fast = matmul(a, b, transposeA: c.ta, transposeB: c.tb, threads: threads) }
                XCTAssertEqual(chosen, [.rows(strips: threads)], "\(c) with \(threads) threads should split by rows")
                XCTAssertEqual(fast.shape, [c.m, c.n])
                XCTAssertLessThanOrEqual(fast.maxAbsDifference(slow), tolerance, "\(c) with \(threads) threads")
                if !c.ta {   // same kernel, same summation order per element: bit-identical to one thread
                    XCTAssertTrue(fast.data.map(\.bitPattern) == single.data.map(\.bitPattern), "\(c) with \(threads) threads: not bit-identical")
                }
            }
        }
        // And a wide product does split by columns (the other branch), for contrast.
        let a = Tensor.uniform([256, 256], low: -1, high: 1, rng: &rng)
        let b = Tensor.uniform([256, 256], low: -1, high: 1, rng: &rng)
        var wide = Tensor.zeros([0])
        XCTAssertEqual(splits { wide = matmul(a, b, threads: 2) }, [.columns(strips: 2)])
        XCTAssertLessThanOrEqual(wide.maxAbsDifference(naiveMatmul(a, b, transposeA: false, transposeB: false)), 1e-5 * 16.1)
    }

    // MARK: Adam's threads

    /// One parameter of 2¹⁸ + 3 weights (above the threshold where Adam uses
    /// threads, and odd, so no thread count divides it): 1, 2 and 3 threads give
    /// bit-identical weights and moments, and every weight moved (a remainder
    /// dropped by the chunking would stay put).
    func testAdamThreadedSplitCoversAnOddParameterBitIdentically() {
        let count = Adam.parallelThreshold + 3
        var rng = Xoshiro256(seed: 11)
        let start = Tensor.uniform([count], low: -1, high: 1, rng: &rng)
        // Gradients in [0.5, 1.5): never 0, so every weight must move.
        let gradient = Tensor.uniform([count], low: 0.5, high: 1.5, rng: &rng)
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        var results: [[UInt32]] = []
        for threads in [1, 2, 3] {
            Parallel.threads = threads
            let p = Parameter(start)
            let adam = Adam(parameters: [p], learningRate: 1e-3)
            for _ in 0..<2 {
                p.grad = gradient
                adam.step()
            }
            let moved = zip(p.value.data, start.data).filter { $0 != $1 }.count
            XCTAssertEqual(moved, count, "\(threads) threads: \(count - moved) weights did not move")
            results.append(p.value.data.map(\.bitPattern) + adam.m[0].data.map(\.bitPattern) + adam.v[0].data.map(\.bitPattern))
        }
        XCTAssertTrue(results[1] == results[0], "2 threads differ from 1")
        XCTAssertTrue(results[2] == results[0], "3 threads differ from 1")
    }

    // MARK: Threaded cross-entropy and Linear backward

    /// A GPT-sized batch of logits is split between threads by rows: the loss,
    /// the probabilities and the gradient are the same floats for 1, 2 and 3
    /// threads (2,051 rows: 3 threads do not divide them evenly), and the loss
    /// is the mean of −log softmax, computed here independently.
    func testCrossEntropySplitBetweenThreadsGivesTheSameNumbers() {
        let n = 2051, c = 66
        XCTAssertGreaterThanOrEqual(n * c, SoftmaxCrossEntropy.parallelThreshold, "the split path must run")
        var rng = Xoshiro256(seed: 5)
        let logits = Tensor.uniform([n, c], low: -4, high: 4, rng: &rng)
        let labels = (0..<n).map { ($0 * 37 + 11) % c }
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        var results: [(loss: UInt64, p: [UInt32], g: [UInt32])] = []
        for threads in [1, 2, 3] {
            Parallel.threads = threads
            let r = SoftmaxCrossEntropy.compute(logits: logits, labels: labels)
            results.append((r.loss.bitPattern, r.probabilities.data.map(\.bitPattern), r.gradient.data.map(\.bitPattern)))
        }
        for t in 1...2 {
            XCTAssertEqual(results[t].loss, results[0].loss, "\(t + 1) threads: loss")
            XCTAssertTrue(results[t].p == results[0].p, "\(t + 1) threads: probabilities")
            XCTAssertTrue(results[t].g == results[0].g, "\(t + 1) threads: gradient")
        }
        var expected = 0.0
        for r in 0..<n {
            let row = (0..<c).map { Double(logits.data[r * c + $0]) }
            expected -= row[labels[r]] - log(row.map { exp($0) }.reduce(0, +))
        }
        XCTAssertEqual(Double(bitPattern: results[0].loss), expected / Double(n), accuracy: 1e-12)
    }

    /// Linear's backward on a GPT-sized batch computes dL/dx and dL/dW side by
    /// side, each on part of the threads: the same floats as one after the other
    /// on one thread, for 2 and 3 threads (dx, the weight and the bias gradients).
    /// The gradients start non-zero, so dL/dW written instead of added would show.
    func testLinearBackwardSideBySideGivesTheSameNumbers() {
        var rng = Xoshiro256(seed: 9)
        let x = Tensor.uniform([2048, 64], low: -1, high: 1, rng: &rng)
        let dy = Tensor.uniform([2048, 192], low: -1, high: 1, rng: &rng)
        XCTAssertGreaterThanOrEqual(2 * 2048 * 64 * 192, Gemm.parallelThreshold, "the side-by-side path must run")
        var results: [[UInt32]] = []
        for threads in [1, 2, 3] {
            var weights = Xoshiro256(seed: 1)
            let layer = Linear(inFeatures: 64, outFeatures: 192, rng: &weights)
            layer.threads = threads
            layer.weight.grad = .uniform([192, 64], low: -1, high: 1, rng: &weights)
            layer.bias!.grad = .uniform([192], low: -1, high: 1, rng: &weights)
            _ = layer.forward(x)
            let dx = layer.backward(dy)
            results.append((dx.data + layer.weight.grad.data + layer.bias!.grad.data).map(\.bitPattern))
        }
        XCTAssertTrue(results[1] == results[0], "2 threads differ from 1")
        XCTAssertTrue(results[2] == results[0], "3 threads differ from 1")
    }

    /// Adam's plan for a model's many parameters: every weight of every
    /// parameter is in exactly one thread's share, for 1 to 4 threads, with an
    /// empty parameter, small ones and large ones split between threads; and
    /// updating by the plan gives the same floats for 1, 2 and 3 threads.
    func testAdamPlanCoversEveryWeightOnce() {
        let sizes = [Adam.largeTensor * 3 + 1, 0, 7, 1, Adam.largeTensor - 1, Adam.largeTensor, 300, 300, 5]
        for threads in 1...4 {
            let plan = Adam.makePlan(sizes: sizes, threads: threads)
            XCTAssertEqual(plan.count, threads)
            var seen = sizes.map { [Int](repeating: 0, count: $0) }
            for share in plan { for piece in share { for i in piece.range { seen[piece.parameter][i] += 1 } } }
            for (p, counts) in seen.enumerated() {
                XCTAssertTrue(counts.allSatisfy { $0 == 1 }, "\(threads) threads: parameter \(p) not covered exactly once")
            }
        }
        var rng = Xoshiro256(seed: 12)
        let starts = sizes.map { Tensor.uniform([$0], low: -1, high: 1, rng: &rng) }
        let gradients = sizes.map { Tensor.uniform([$0], low: 0.5, high: 1.5, rng: &rng) }
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        var results: [[UInt32]] = []
        for threads in [1, 2, 3] {
            Parallel.threads = threads
            let parameters = starts.map { Parameter($0) }
            let adam = Adam(parameters: parameters, learningRate: 1e-3)
            for _ in 0..<2 {
                for (p, g) in zip(parameters, gradients) { p.grad = g }
                adam.step()
            }
            results.append(parameters.flatMap { $0.value.data.map(\.bitPattern) })
        }
        XCTAssertEqual(results[1], results[0], "2 threads differ from 1")
        XCTAssertEqual(results[2], results[0], "3 threads differ from 1")
    }

    /// `Parallel.forEach(costs:)` runs every index exactly once, whatever the
    /// costs (zeros, ties, one huge) and threads.
    func testForEachWithCostsRunsEveryIndexOnce() {
        for costs in [[], [5], [0, 0, 0], [16, 3, 30, 16, 0, 9, 12, 20], [1000, 1, 1, 1, 1]] {
            for threads in 1...3 {
                var runs = [Int](repeating: 0, count: costs.count)
                runs.withUnsafeMutableBufferPointer { counts in
                    Parallel.forEach(costs: costs, threads: threads) { i in counts[i] += 1 }
                }
                XCTAssertEqual(runs, costs.map { _ in 1 }, "costs \(costs), \(threads) threads")
            }
        }
    }

    // MARK: The data order

    /// The first indices of epoch 1's order for seed 0, computed outside Swift by
    /// a separate implementation (Python) of the documented derivation: the
    /// trainer's generator is xoshiro256** seeded through splitmix64 with
    /// seed ^ 0xDA7A0DE5; the order is a Fisher–Yates shuffle of 0..<n from the
    /// last index down, swapping i with below(i + 1), Lemire's multiply-shift with
    /// rejection. Changing the seed's derivation, the generator or the shuffle
    /// changes these numbers.
    func testEpochOneOrderForSeedZeroIsPinned() {
        var rng = Xoshiro256(seed: 0)
        let model = MoEClassifier(experts: 8, rng: &rng)
        let trainer = Trainer(model: model, config: TrainingConfig())
        var generator = trainer.rng
        var order = Array(0..<5000)   // the walkthrough's 5,000 training images
        generator.shuffle(&order)
        XCTAssertEqual(Array(order.prefix(12)), [3078, 1046, 4756, 751, 4499, 2153, 4669, 3414, 2401, 896, 2271, 3403])
        var small = trainer.rng
        var ten = Array(0..<10)
        small.shuffle(&ten)
        XCTAssertEqual(ten, [3, 8, 2, 7, 6, 5, 4, 0, 9, 1])

        // gpt-moe's trainer derives its generator the same way.
        let gpt = GPT(config: tinyGPTConfig(moeLayers: [], tie: true), rng: &rng)
        let windows = TokenWindows(tokens: Array(repeating: 0, count: 200), range: 0..<200, context: 8, stride: 8)
        var lm = LanguageModelTrainer(model: gpt, train: windows, validation: windows, config: LanguageModelTrainingConfig()).rng
        var tenAgain = Array(0..<10)
        lm.shuffle(&tenAgain)
        XCTAssertEqual(tenAgain, [3, 8, 2, 7, 6, 5, 4, 0, 9, 1])
    }

    // MARK: Capacity rounds up

    /// `--capacity 0.1` means 0.1, not the Float nearest it: 0.1·80·2/8 is exactly 2, and a
    /// factor read as a Float and widened (0.10000000149) would round it up to 3.
    func testACapacityFlagIsReadAsTheDecimalItSpells() throws {
        for (words, tokens, expected) in [(["--capacity", "0.1"], 80, 2), (["--capacity", "0.2"], 1000, 50)] {
            var flags = RoutingFlags()
            var args = ArgumentReader(words)
            let flag = try XCTUnwrap(args.next())
            XCTAssertTrue(try flags.parse(flag, from: &args))
            flags.finish()
            let setup = flags.applied(to: RoutingSetup())
            let factor = try XCTUnwrap(setup.capacityFactor)
            XCTAssertEqual(Capacity(factor: factor).limit(tokens: tokens, activeExperts: 2, experts: 8), expected,
                           "\(words.joined(separator: " ")) with \(tokens) tokens")
        }
    }

    /// F·N·k/E = 1.25·10·2/8 = 3.125: each expert keeps ⌈3.125⌉ = 4 tokens, not 3.
    func testCapacityOfANonIntegerProductRoundsUp() {
        let capacity = Capacity(factor: 1.25)
        XCTAssertEqual(capacity.limit(tokens: 10, activeExperts: 2, experts: 8), 4)
        // Every token asks for experts 0 and 1: each keeps its first 4 tokens.
        let n = 10, e = 8
        let routing = Routing(k: 2, probabilities: Tensor(shape: [n, e], data: [Float](repeating: 1 / Float(e), count: n * e)),
                              experts: (0..<n).flatMap { _ in [0, 1] },
                              weights: Tensor(shape: [n, 2], data: [Float](repeating: 0.5, count: n * 2)))
        let limited = capacity.apply(to: routing, activeExperts: 2)
        XCTAssertEqual(limited.dispatchedCount, 8, "4 tokens for each of the 2 chosen experts")
        XCTAssertEqual(limited.droppedCount, 12)
        // The first 4 tokens in token order are the ones kept.
        for t in 0..<n { XCTAssertEqual(limited.dispatchedExpert(token: t, slot: 0) != nil, t < 4, "token \(t)") }

        // Expert choice sizes its buckets the same way: ⌈1.25·10·2/8⌉ = 4 tokens per expert.
        let router = ExpertChoiceRouter(experts: e, k: 2, capacityFactor: 1.25)
        var rng = Xoshiro256(seed: 12)
        let chosen = router.route(logits: Tensor.uniform([n, e], low: -1, high: 1, rng: &rng), context: RoutingContext())
        XCTAssertEqual(chosen.experts.filter { $0 >= 0 }.count, 4 * e)
    }

    // MARK: Adam's ε

    /// With g = 1e-8, √v̂ = 1e-8 is as small as ε, so where ε goes decides the
    /// step: PyTorch's θ −= lr·m̂/(√v̂ + ε) moves θ by lr·1e-8/2e-8 = lr/2 each
    /// step (−0.05, then −0.1 with lr 0.1); ε inside the root, √(v̂ + ε) ≈ 1e-4,
    /// would move it by 1e-5.
    func testAdamEpsilonIsAddedAfterTheSquareRoot() {
        let p = Parameter(Tensor(shape: [1], data: [0]))
        let adam = Adam(parameters: [p], learningRate: 0.1)
        for expected: Float in [-0.05, -0.1] {
            p.grad = Tensor(shape: [1], data: [1e-8])
            adam.step()
            XCTAssertEqual(p.value.data[0], expected, accuracy: 1e-5)
        }
    }
}
