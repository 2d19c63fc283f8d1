// Training the GPT: a short run on the synthetic corpus must learn, runs are
// deterministic for a seed, early stopping stops, and a checkpoint comes back
// as the same model with the same tokenizer.
import XCTest
@testable import MoE

final class GPTTrainingTests: XCTestCase {

    /// A tiny model and its data: the synthetic corpus, character tokens.
    private func setUp(moe: Bool, steps: Int, learningRate: Float = 3e-3, patience: Int = 0,
                       evalInterval: Int = 25) -> (LanguageModelTrainer, CharTokenizer) {
        let text = SyntheticText.generate(characters: 30_000, seed: 5)
        let (trainText, validationText) = TextCorpus.split(text, validationFraction: 0.1)
        let tokenizer = CharTokenizer(training: trainText)
        let train = tokenizer.encode(trainText), validation = tokenizer.encode(validationText)
        let split = TokenSplit(tokens: train + validation, cut: train.count, context: 32, stride: 32)
        var config = GPTConfig()
        config.vocabularySize = tokenizer.vocabularySize; config.contextLength = 32
        config.layers = 2; config.width = 32; config.heads = 2; config.hidden = 64
        config.moeLayers = moe ? [1] : []; config.experts = 4; config.routing.k = 1; config.routing.auxWeight = 0.01
        var rng = Xoshiro256(seed: 11)
        let model = GPT(config: config, rng: &rng)
        var training = LanguageModelTrainingConfig()
        training.batchSize = 16; training.learningRate = learningRate; training.steps = steps; training.epochs = 1000
        training.evalInterval = evalInterval; training.evalWindows = 32; training.patience = patience; training.seed = 3
        return (LanguageModelTrainer(model: model, train: split.train, validation: split.validation, config: training), tokenizer)
    }

    /// 150 steps of a 2-block MoE model on the synthetic corpus (~27,000 training
    /// characters, 26 symbols + "unknown"). At the start the validation loss is
    /// near ln 27 ≈ 3.30 (a uniform guess). The text is a few dozen made-up words
    /// in fixed templates, so a model that learns goes far below that: this run
    /// goes from 3.34 to 1.15 (the test prints the curve). The margin asked for,
    /// 1.5 nats, leaves 0.7 nats of slack: it fails on a real regression, not on
    /// a change of rounding. It must also beat, by 0.5 nats, the best model that
    /// ignores context: letter frequencies of the training text, scored on the
    /// validation text (the unigram cross-entropy, computed and printed here).
    func testShortSyntheticRunLowersValidationLoss() {
        let (trainer, tokenizer) = setUp(moe: true, steps: 150)
        XCTAssertEqual(tokenizer.vocabularySize, 27)
        // Unigram cross-entropy: −mean log q(token) with q the training frequencies.
        var counts = [Double](repeating: 0, count: 27)
        for t in trainer.train.tokens[trainer.train.range] { counts[t] += 1 }
        let total = counts.reduce(0, +)
        let held = trainer.validation.tokens[trainer.validation.range]
        let unigram = held.reduce(0.0) { $0 - Foundation.log(max(counts[$1], 0.5) / total) } / Double(held.count)
        note(String(format: "unigram cross-entropy %.3f", unigram))
        _ = trainer.run(onEvaluation: { record, _ in
            note(String(format: "step %3d  train %.3f  val %.3f  α·aux %.4f", record.step, record.trainLoss,
                         record.validationLoss, record.weightedAuxLoss))
        })
        let first = trainer.history.first!.validationLoss, best = trainer.bestValidationLoss
        XCTAssertEqual(first, Foundation.log(27.0), accuracy: 0.15, "starts near a uniform guess")
        XCTAssertLessThan(best, first - 1.5, "validation loss \(first) -> \(best)")
        XCTAssertLessThan(best, unigram - 0.5, "no better than letter frequencies (\(unigram))")
        XCTAssertEqual(trainer.history.map(\.step), [0, 25, 50, 75, 100, 125, 150])
        // The MoE layer routed tokens and reported it.
        let routing = trainer.history.last!.routing
        XCTAssertEqual(routing.map(\.layer), [1])
        XCTAssertEqual(routing[0].usage.reduce(0, +), 1, accuracy: 1e-9)
        // Restoring the best weights gives back the best loss.
        trainer.restoreBestWeights()
        XCTAssertEqual(trainer.evaluate(), best)
    }

    /// The same seed, the same run: every loss bit for bit.
    func testRunsAreDeterministic() {
        var losses: [[Double]] = []
        for _ in 0..<2 {
            let (trainer, _) = setUp(moe: true, steps: 6, evalInterval: 3)
            var seen: [Double] = []
            _ = trainer.run(onStep: { _, _, loss, aux, _ in seen += [loss, aux] },
                            onEvaluation: { record, _ in seen.append(record.validationLoss) })
            losses.append(seen)
        }
        XCTAssertEqual(losses[0], losses[1])
        XCTAssertEqual(losses[0].count, 6 * 2 + 3)
    }

    /// `--threads` changes who computes, not what: 1, 2 and 3 threads give the
    /// same losses and the same weights, bit for bit. The model is gpt-moe's
    /// size in width (64, 4 heads, MLP and experts 256 wide, 8 experts top-1)
    /// with 32 windows of 64 tokens per step, so every kind of split runs: the
    /// MLP products (2,048 × 64 × 256) above the matmul's threshold, attention's
    /// 128 (sequence, head) pairs, the experts shared out by rows, and Adam's
    /// 2¹⁸-weight threshold (the model has 338,056 weights).
    func testThreadCountsGiveBitIdenticalTraining() {
        let text = SyntheticText.generate(characters: 40_000, seed: 5)
        let (trainText, validationText) = TextCorpus.split(text, validationFraction: 0.1)
        let tokenizer = CharTokenizer(training: trainText)
        let split = TokenSplit(tokens: tokenizer.encode(trainText) + tokenizer.encode(validationText),
                               cut: tokenizer.encode(trainText).count, context: 64, stride: 64)
        var config = GPTConfig()
        config.vocabularySize = tokenizer.vocabularySize; config.contextLength = 64
        config.layers = 2; config.width = 64; config.heads = 4; config.hidden = 256
        config.moeLayers = [1]; config.experts = 8; config.routing.k = 1; config.routing.auxWeight = 0.01
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        var runs: [(losses: [Double], weights: [[UInt32]])] = []
        for threads in [1, 2, 3] {
            Parallel.threads = threads
            var rng = Xoshiro256(seed: 11)
            let model = GPT(config: config, rng: &rng)
            var training = LanguageModelTrainingConfig()
            training.batchSize = 32; training.learningRate = 3e-3; training.steps = 3; training.epochs = 1000
            training.evalInterval = 3; training.evalWindows = 8; training.seed = 3
            let trainer = LanguageModelTrainer(model: model, train: split.train, validation: split.validation,
                                               config: training)
            var losses: [Double] = []
            _ = trainer.run(onStep: { _, _, loss, aux, _ in losses += [loss, aux] },
                            onEvaluation: { record, _ in losses.append(record.validationLoss) })
            runs.append((losses, model.namedParameters.map { $0.parameter.value.data.map(\.bitPattern) }))
            if threads == 1 {
                XCTAssertGreaterThan(model.namedParameters.reduce(0) { $0 + $1.parameter.value.count }, 1 << 18,
                                     "the model must be large enough for Adam to split")
            }
        }
        for (i, threads) in [2, 3].enumerated() {
            XCTAssertEqual(runs[i + 1].losses, runs[0].losses, "\(threads) threads: other losses than 1 thread")
            XCTAssertTrue(runs[i + 1].weights == runs[0].weights, "\(threads) threads: other weights than 1 thread")
        }
        XCTAssertEqual(runs[0].losses.count, 3 * 2 + 2)
    }

    /// With a learning rate of 0 nothing changes, so no evaluation after the first
    /// can be better: patience 2 stops the run after the second evaluation that did not improve.
    func testEarlyStopping() {
        let (trainer, _) = setUp(moe: false, steps: 50, learningRate: 0, patience: 2, evalInterval: 5)
        XCTAssertEqual(trainer.run(), .earlyStopped)
        XCTAssertEqual(trainer.step, 10)
        XCTAssertEqual(trainer.history.map(\.step), [0, 5, 10])
        XCTAssertEqual(trainer.bestStep, 0)
    }

    /// Save, load: the same parameters bit for bit, the same configuration, the
    /// same tokenizer, the same logits. And a file that is not a GPT checkpoint
    /// is refused with its name in the message.
    func testCheckpointRoundTrip() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("gpt-ckpt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }

        for (moe, tokenizer) in [(true, CharTokenizer(training: "to be or not") as Tokenizer),
                                 (false, BPETokenizer(training: "to be or not to be", vocabularySize: 270))] {
            var config = tinyGPTConfig(moeLayers: moe ? [1] : [], tie: moe)
            config.vocabularySize = tokenizer.vocabularySize
            var rng = Xoshiro256(seed: 12)
            let model = GPT(config: config, rng: &rng)
            let url = folder.appendingPathComponent("m\(moe).safetensors")
            try GPTCheckpoint.save(model, tokenizer: tokenizer, to: url, metadata: ["step": "7"])

            let (loaded, loadedTokenizer, metadata) = try GPTCheckpoint.load(from: url)
            XCTAssertEqual(loaded.config, config)
            XCTAssertEqual(metadata["step"], "7")
            XCTAssertEqual(loaded.namedParameters.map(\.name), model.namedParameters.map(\.name))
            for (a, b) in zip(loaded.namedParameters, model.namedParameters) {
                XCTAssertEqual(a.parameter.value.data.map(\.bitPattern), b.parameter.value.data.map(\.bitPattern), a.name)
            }
            XCTAssertEqual(loadedTokenizer.kind, tokenizer.kind)
            XCTAssertEqual(loadedTokenizer.encode("not to be"), tokenizer.encode("not to be"))
            let tokens = Array(tokenizer.encode("to be or").prefix(config.contextLength))
            XCTAssertEqual(loaded.forward(tokens: tokens, batch: 1), model.forward(tokens: tokens, batch: 1))
        }

        // Any routing comes back: a noisy router (weights of its own), a temperature
        // schedule, a capacity, and the auxiliary-loss-free bias (a buffer, not a weight).
        var config = tinyGPTConfig(moeLayers: [1], tie: true)
        config.routing.router = "noisy"
        config.routing.balancing = ["switch", "bias"]
        config.routing.temperature = TemperatureSchedule(start: 2, end: 0.5, shape: .cosine)
        config.routing.capacityFactor = 1.25
        config.routerSeed = 9
        let tokenizer = CharTokenizer(training: "abcdefghij")
        config.vocabularySize = tokenizer.vocabularySize
        var rng = Xoshiro256(seed: 13)
        let model = GPT(config: config, rng: &rng)
        _ = model.forward(tokens: [1, 2, 3, 4, 5, 6], batch: 1)
        model.afterStep()   // moves the bias away from zero
        let buffers = model.namedBuffers
        XCTAssertEqual(buffers.map(\.name), ["blocks.1.moe.balancing.1.bias"])
        XCTAssertTrue(buffers[0].value.data.contains { $0 != 0 })
        let url = folder.appendingPathComponent("noisy.safetensors")
        try GPTCheckpoint.save(model, tokenizer: tokenizer, to: url)
        let (loaded, _, _) = try GPTCheckpoint.load(from: url)
        XCTAssertEqual(loaded.config, config, "routing settings, seeds and all")
        XCTAssertTrue(loaded.namedParameters.contains { $0.name == "blocks.1.moe.gating.noise.weight" }, "the noisy router's own weights")
        XCTAssertEqual(loaded.namedBuffers.map(\.value), buffers.map(\.value))
        model.setMode(training: false, progress: 1); loaded.setMode(training: false, progress: 1)
        XCTAssertEqual(loaded.forward(tokens: [1, 2, 3, 4, 5, 6], batch: 1), model.forward(tokens: [1, 2, 3, 4, 5, 6], batch: 1))

        // A checkpoint whose metadata lies: every lie is caught before a model is
        // built from it, with a message naming the file and what does not fit.
        let honest = try Safetensors.read(from: url)
        let tensors = honest.order.map { ($0, honest.tensors[$0]!) }
        let lies: [(changes: [String: String], says: String)] = [
            (["width": "1000000"], "has shape"),                     // would allocate gigabytes
            (["layers": "40"], "does not hold"),
            (["layers": "1", "moe_layers": ""], "more blocks"),
            (["experts": "64"], "does not hold"),
            (["moe_layers": "-1"], "not a list of block indices"),
            (["heads": "0"], "impossible model"),
            (["routing": "{\"router\": 3}"], "field \"router\" is missing or not a string"),
            (["vocabulary_size": "abc"], "not a count"),
        ]
        for lie in lies {
            let tampered = folder.appendingPathComponent("tampered.safetensors")
            try Safetensors.write(tensors, metadata: honest.metadata.merging(lie.changes) { _, new in new }, to: tampered)
            XCTAssertThrowsError(try GPTCheckpoint.load(from: tampered), "\(lie.changes)") { error in
                XCTAssertTrue("\(error)".hasPrefix(tampered.path + ": "), "\(error)")
                XCTAssertTrue("\(error)".contains(lie.says), "\(lie.changes): \(error)")
            }
        }

        let other = folder.appendingPathComponent("other.safetensors")
        try Safetensors.write([("w", Tensor.zeros([2]))], metadata: [:], to: other)
        XCTAssertThrowsError(try GPTCheckpoint.load(from: other)) { error in
            XCTAssertTrue("\(error)".hasPrefix(other.path + ": "), "\(error)")
            XCTAssertTrue("\(error)".contains("not a gpt-moe checkpoint"), "\(error)")
        }
    }
}

import Foundation
