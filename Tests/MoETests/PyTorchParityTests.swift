// Parity with PyTorch, the llm.c way: Tests/Reference/pytorch_parity.py builds
// the same tiny models in PyTorch, runs autograd and torch.optim.Adam, and
// saves inputs, weights, outputs, every gradient and the weights after 3 Adam
// steps in Fixtures/parity.safetensors. Here the Swift models load the same
// weights and must reproduce every number. The PyTorch modules are the
// walkthrough's Part 2 classes (moe_torch.py), gate noise included: the
// fixture holds the ε of every forward pass, and the Swift router uses it.
//
// Tolerances: both sides compute in float32 but in different orders (tiled
// FMA sums here, MKL/oneDNN there), so values differ by a few ulps of the
// intermediate sums. Values of order 1 agree to ~1e-6; we allow 1e-5
// absolute for forward values and gradients, and 1e-5 for weights after Adam
// (whose update size is lr = 1e-2 per step regardless of the gradient's size).
import XCTest
@testable import MoE

final class PyTorchParityTests: XCTestCase {
    var fixture: SafetensorsFile!

    override func setUpWithError() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/parity.safetensors")
        fixture = try Safetensors.read(from: url)
    }

    func tensor(_ name: String) throws -> Tensor {
        guard let t = fixture.tensors[name] else { throw SafetensorsError(source: "parity fixture", problem: "no tensor '\(name)'") }
        return t
    }

    /// Compares and prints, llm.c style: first values of both and the largest difference.
    func compare(_ name: String, _ ours: Tensor, _ theirs: Tensor, tolerance: Float,
                 file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(ours.count, theirs.count, "\(name): sizes differ", file: file, line: line)
        guard ours.count == theirs.count else { return }
        var diff: Float = 0
        for i in 0..<ours.count { diff = max(diff, abs(ours.data[i] - theirs.data[i])) }
        let head = { (t: Tensor) in t.data.prefix(3).map { String(format: "% .6f", $0) }.joined(separator: " ") }
        note("\(name.padding(toLength: 32, withPad: " ", startingAt: 0)) swift [\(head(ours))]  torch [\(head(theirs))]  max diff \(String(format: "%.2e", diff))")
        XCTAssertLessThanOrEqual(diff, tolerance, "\(name): max difference \(diff)", file: file, line: line)
    }

    func load(_ model: Classifier, prefix: String) throws {
        for (name, p) in model.namedParameters {
            let t = try tensor("\(prefix)/param/\(name)")
            XCTAssertEqual(t.shape, p.value.shape, name)
            p.value = t
        }
    }

    func labels(_ prefix: String) throws -> [Int] { try tensor("\(prefix)/labels").data.map { Int($0) } }

    /// ε of forward pass `step` [B, N], from the fixture.
    func noise(step: Int) throws -> [Float] {
        let all = try tensor("moe/noise")   // [3, B, N]
        let size = all.shape[1] * all.shape[2]
        return Array(all.data[(step * size)..<((step + 1) * size)])
    }

    func makeMoE() -> MoEClassifier {
        var rng = Xoshiro256(seed: 0)
        return MoEClassifier(inputSize: 12, hidden: 8, expertHidden: 6, experts: 4, topK: 2, classes: 5,
                             auxLossWeight: 0.1, rng: &rng)
    }

    /// The Swift names are exactly the state_dict keys of Part 2's PyTorch
    /// classes: a checkpoint loads there with strict=True, and theirs here.
    func testCheckpointNamesAreTheStateDictOfPart2sModules() throws {
        for (prefix, model) in [("moe", makeMoE() as Classifier),
                                ("dense", { var r = Xoshiro256(seed: 0)
                                            return DenseClassifier(inputSize: 12, hidden: 8, expertHidden: 6, classes: 5, rng: &r) }())] {
            let theirs = Set(fixture.order.filter { $0.hasPrefix("\(prefix)/param/") }.map { String($0.dropFirst(prefix.count + 7)) })
            XCTAssertEqual(Set(model.namedParameters.map(\.name)), theirs, prefix)
        }
    }

    /// Evaluation mode adds no noise: the logits are a deterministic function of x.
    func testEvaluationLogitsMatchPyTorchWithoutNoise() throws {
        let model = makeMoE()
        try load(model, prefix: "moe")
        model.setMode(training: false, progress: 1)
        compare("eval logits", model.forward(try tensor("moe/x")), try tensor("moe/eval_logits"), tolerance: 1e-5)
    }

    func testMoEClassifierMatchesPyTorch() throws {
        let model = makeMoE()
        let gating = try XCTUnwrap(model.moe.router as? TopKGating)
        try load(model, prefix: "moe")
        let x = try tensor("moe/x"), y = try labels("moe")

        gating.useNoise(try noise(step: 0))
        let (logits, aux, counts) = model(x)
        let routing = model.moe.lastRouting!
        compare("router probabilities", routing.probabilities, try tensor("moe/router_probs"), tolerance: 1e-6)
        XCTAssertEqual(routing.experts, try tensor("moe/topk_index").data.map { Int($0) }, "top-k choices differ")
        compare("top-k weights", routing.weights, try tensor("moe/topk_weight"), tolerance: 1e-6)
        compare("logits", logits, try tensor("moe/logits"), tolerance: 1e-5)
        let ce = SoftmaxCrossEntropy.compute(logits: logits, labels: y)
        XCTAssertEqual(ce.loss, Double(try tensor("moe/ce_loss").data[0]), accuracy: 1e-5)
        XCTAssertEqual(aux, Double(try tensor("moe/aux_loss").data[0]), accuracy: 1e-5)
        XCTAssertEqual(counts.reduce(0, +), 2 * x.shape[0], "expert_counts: k slots per row")
        XCTAssertEqual(ce.loss + model.weightedAuxLoss, Double(try tensor("moe/loss").data[0]), accuracy: 1e-5)

        model.zeroGrad()
        model.backward(ce.gradient)
        for (name, p) in model.namedParameters {
            compare("grad \(name)", p.grad, try tensor("moe/grad/\(name)"), tolerance: 1e-5)
        }

        try load(model, prefix: "moe")
        try checkAdam(model, prefix: "moe", x: x, y: y) { step in gating.useNoise(try self.noise(step: step)) }
    }

    func testDenseClassifierMatchesPyTorch() throws {
        var rng = Xoshiro256(seed: 0)
        let model = DenseClassifier(inputSize: 12, hidden: 8, expertHidden: 6, classes: 5, rng: &rng)
        try load(model, prefix: "dense")
        let x = try tensor("dense/x"), y = try labels("dense")
        let logits = model.forward(x)
        compare("dense logits", logits, try tensor("dense/logits"), tolerance: 1e-5)
        let ce = SoftmaxCrossEntropy.compute(logits: logits, labels: y)
        XCTAssertEqual(ce.loss, Double(try tensor("dense/loss").data[0]), accuracy: 1e-5)
        model.zeroGrad()
        model.backward(ce.gradient)
        for (name, p) in model.namedParameters {
            compare("dense grad \(name)", p.grad, try tensor("dense/grad/\(name)"), tolerance: 1e-5)
        }
        try load(model, prefix: "dense")
        try checkAdam(model, prefix: "dense", x: x, y: y)
    }

    /// Three Adam steps (lr 1e-2) on the same batch, from the fixture's initial weights.
    func checkAdam(_ model: Classifier, prefix: String, x: Tensor, y: [Int],
                   beforeStep: (Int) throws -> Void = { _ in }) throws {
        let adam = Adam(parameters: model.parameters, learningRate: 1e-2)
        var losses: [Float] = []
        for step in 0..<3 {
            try beforeStep(step)
            model.zeroGrad()
            let ce = SoftmaxCrossEntropy.compute(logits: model.forward(x), labels: y)
            losses.append(Float(ce.loss + model.weightedAuxLoss))
            model.backward(ce.gradient)
            adam.step()
        }
        compare("\(prefix) losses of 3 Adam steps", Tensor(shape: [3], data: losses), try tensor("\(prefix)/adam_losses"), tolerance: 1e-5)
        for (name, p) in model.namedParameters {
            compare("\(prefix) after 3 Adam steps \(name)", p.value, try tensor("\(prefix)/adam3/\(name)"), tolerance: 1e-5)
        }
    }
}
