// Numbers inside valid containers: a resume file, a weights file, a GPT
// checkpoint's routing and tokenizer, each well-formed safetensors whose values
// are out of range. Every case must throw one line naming the file and the
// field, and change nothing; the good file next to it must still load.
// (The containers themselves, damaged, are SafetensorsTests' and IDXTests' job.)
import XCTest
@testable import MoE

final class DamagedFileTests: XCTestCase {
    private func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("damaged-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    private func makeMoE(seed: UInt64) -> MoEClassifier {
        var rng = Xoshiro256(seed: seed)
        return MoEClassifier(experts: 8, rng: &rng)
    }

    private func bits(_ model: Classifier) -> [[UInt32]] { model.namedParameters.map { $0.parameter.value.data.map(\.bitPattern) } }

    /// Ten random 784-pixel images: one batch of 64, so one Adam step per epoch.
    private func tinyData() -> LabeledImages {
        var rng = Xoshiro256(seed: 5)
        return LabeledImages(images: (0..<(10 * 784)).map { _ in rng.uniform() }, labels: (0..<10).map { $0 }, pixels: 784)
    }

    /// `body` must throw an error whose text is one line starting with `path: ` and containing every word of `says`.
    private func expectError(_ what: String, path: String, says: [String], line: UInt = #line, _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("\(what): accepted", line: line)
        } catch {
            let message = "\(error)"
            XCTAssertFalse(message.contains("\n"), "\(what): \(message)", line: line)
            XCTAssertTrue(message.hasPrefix(path + ": "), "\(what): \(message)", line: line)
            for word in says { XCTAssertTrue(message.contains(word), "\(what): '\(word)' not in: \(message)", line: line) }
        }
    }

    // MARK: Resume files

    /// A resume file after one epoch (one step), and its contents for tampering.
    private func savedResumeFile(in folder: URL) throws -> (url: URL, file: SafetensorsFile) {
        let trainer = Trainer(model: makeMoE(seed: 1), config: TrainingConfig())
        _ = trainer.trainEpoch(on: tinyData())
        let url = folder.appendingPathComponent("moe.resume.safetensors")
        try Checkpoint.saveTrainingState(trainer, to: url)
        return (url, try Safetensors.read(from: url))
    }

    func testResumeFileNumbersOutOfRangeAreRejectedAndChangeNothing() throws {
        let folder = try temporaryDirectory()
        let (good, saved) = try savedResumeFile(in: folder)
        XCTAssertEqual(saved.metadata["adam_step"], "1")
        XCTAssertEqual(saved.metadata["epochs_done"], "1")
        let goodHistory = saved.metadata["history"]!
        let row = goodHistory.dropFirst(2).dropLast(2)   // the one row's numbers, without "[[" and "]]"
        let cases: [(field: String, value: String, says: [String])] = [
            ("adam_step", String(Int.max), ["adam_step", "0...\(Checkpoint.maxAdamStep)"]),
            ("adam_step", String(Int.min), ["adam_step"]),
            ("adam_step", "-1", ["adam_step"]),
            ("adam_step", "1e3", ["adam_step"]),
            ("epochs_done", "-1", ["epochs_done", "0...10000"]),
            ("epochs_done", String(Int.max), ["epochs_done"]),
            ("epochs_done", "2", ["history", "1 epochs", "2"]),      // the history has one row
            ("epochs_done", "0", ["history"]),
            ("history", "[[1e300," + row.split(separator: ",").dropFirst().joined(separator: ",") + "]]", ["history", "epoch"]),
            ("history", "[[2," + row.split(separator: ",").dropFirst().joined(separator: ",") + "]]", ["history", "expected 1"]),
            ("history", "[[1,-0.5,0,0.5,0.5,1]]", ["history", "train loss"]),
            ("history", "[[1,1e400,0,0.5,0.5,1]]", ["history"]),
            ("history", "[[1,null,0,0.5,0.5,1]]", ["history", "train loss", "null"]),
            ("history", "[[1,0.5,0,1.5,0.5,1]]", ["history", "train accuracy", "0...1"]),
            ("history", "[[1,0.5,0,0.5,0.5,-3]]", ["history", "seconds"]),
            ("history", "[[1,0.5,0,0.5,0.5,1],[2,0.5,0,0.5,0.5,1]]", ["history", "2 epochs"]),
            ("history", "[[NaN,0,0,0,0,0]]", ["history", "JSON"]),
            ("rng_state", "1,2,x,4", ["rng_state", "four unsigned integers"]),
            ("rng_state", "1,,2,3", ["rng_state"]),
            ("rng_state", "1,2,3,4,5", ["rng_state"]),
            ("rng_state", "-1,2,3,4", ["rng_state"]),
            ("rng_state", "0,0,0,0", ["rng_state", "all zeros"]),
        ]
        let tensors = saved.order.map { ($0, saved.tensors[$0]!) }
        for c in cases {
            let url = folder.appendingPathComponent("damaged.safetensors")
            try Safetensors.write(tensors, metadata: saved.metadata.merging([c.field: c.value]) { _, new in new }, to: url)
            let trainer = Trainer(model: makeMoE(seed: 0), config: TrainingConfig())
            let before = bits(trainer.model), rngBefore = trainer.rng
            expectError("\(c.field) = \(c.value)", path: url.path, says: c.says) {
                try Checkpoint.restoreTrainingState(trainer, from: url, batchesPerEpoch: 1)
            }
            XCTAssertEqual(bits(trainer.model), before, "\(c.field) = \(c.value): weights changed")
            XCTAssertEqual(trainer.rng, rngBefore)
            XCTAssertEqual(trainer.epochsDone, 0)
            XCTAssertEqual(trainer.optimizer.stepCount, 0)
            XCTAssertTrue(trainer.history.isEmpty)
        }
        // adam_step must be epochs_done × the batches of an epoch, when the caller knows them.
        let trainer = Trainer(model: makeMoE(seed: 0), config: TrainingConfig())
        expectError("2 batches per epoch", path: good.path, says: ["adam_step", "1 epochs of 2 batches take 2 steps"]) {
            try Checkpoint.restoreTrainingState(trainer, from: good, batchesPerEpoch: 2)
        }
        XCTAssertEqual(trainer.optimizer.stepCount, 0)
        // The good file restores.
        try Checkpoint.restoreTrainingState(trainer, from: good, batchesPerEpoch: 1)
        XCTAssertEqual(trainer.epochsDone, 1)
        XCTAssertEqual(trainer.optimizer.stepCount, 1)
        XCTAssertEqual(trainer.history.count, 1)
    }

    /// Non-finite weights, moments, or a negative second moment: rejected by name.
    func testNonFiniteTensorsInResumeAndWeightsFilesAreRejected() throws {
        let folder = try temporaryDirectory()
        let (_, saved) = try savedResumeFile(in: folder)
        let model = makeMoE(seed: 0)
        let first = model.namedParameters[0].name   // whatever the model calls its first weight
        let last = model.namedParameters[model.namedParameters.count - 1].name
        let damages: [(tensor: String, value: Float, says: [String])] = [
            (first, .nan, ["'\(first)'", "nan", "finite"]),
            (last, .infinity, ["'\(last)'", "inf"]),
            ("optimizer.m." + first, .nan, ["optimizer.m.\(first)", "finite"]),
            ("optimizer.v." + last, -1, ["optimizer.v.\(last)", "negative"]),
            ("optimizer.v." + first, -.infinity, ["optimizer.v.\(first)"]),
        ]
        for d in damages {
            let tensors = saved.order.map { name -> (String, Tensor) in
                var t = saved.tensors[name]!
                if name == d.tensor { t.data[t.count / 2] = d.value }
                return (name, t)
            }
            let url = folder.appendingPathComponent("damaged.resume.safetensors")
            try Safetensors.write(tensors, metadata: saved.metadata, to: url)
            let trainer = Trainer(model: makeMoE(seed: 0), config: TrainingConfig())
            let before = bits(trainer.model)
            expectError("\(d.tensor) = \(d.value)", path: url.path, says: d.says) {
                try Checkpoint.restoreTrainingState(trainer, from: url)
            }
            XCTAssertEqual(bits(trainer.model), before)
            XCTAssertEqual(trainer.optimizer.stepCount, 0)
            if !d.tensor.hasPrefix("optimizer.") {
                // The same weights as a plain weights file (what --init reads).
                let weights = folder.appendingPathComponent("damaged.safetensors")
                try Safetensors.write(tensors.filter { !$0.0.hasPrefix("optimizer.") }, metadata: [:], to: weights)
                let target = makeMoE(seed: 0), targetBefore = bits(target)
                expectError("--init with \(d.tensor) = \(d.value)", path: weights.path, says: d.says) {
                    try Checkpoint.loadWeights(into: target, from: weights)
                }
                XCTAssertEqual(bits(target), targetBefore, "a rejected file changed the model")
            }
        }
    }

    // MARK: Training stops at a non-finite loss

    func testTrainerStopsAtTheFirstNonFiniteLossBeforeUpdating() {
        let model = makeMoE(seed: 0)
        model.namedParameters[0].parameter.value.data[0] = .nan
        let before = bits(model)
        let trainer = Trainer(model: model, config: TrainingConfig())
        let record = trainer.trainEpoch(on: tinyData())
        XCTAssertTrue(record.trainLoss.isNaN)
        XCTAssertEqual(trainer.nonFiniteLoss?.epoch, 1)
        XCTAssertEqual(trainer.nonFiniteLoss?.step, 1)
        XCTAssertEqual(trainer.epochsDone, 0, "the failed epoch is not counted")
        XCTAssertTrue(trainer.history.isEmpty)
        XCTAssertEqual(trainer.optimizer.stepCount, 0, "no update from a NaN loss")
        XCTAssertEqual(bits(model), before)
        _ = trainer.trainEpoch(on: tinyData())
        XCTAssertEqual(trainer.optimizer.stepCount, 0, "and no more epochs after it")
    }

    func testLanguageModelTrainerStopsAtTheFirstNonFiniteLoss() {
        var rng = Xoshiro256(seed: 0)
        let model = GPT(config: tinyGPTConfig(moeLayers: [1], tie: true), rng: &rng)
        var config = LanguageModelTrainingConfig()
        config.batchSize = 4
        config.steps = 20
        config.evalInterval = 5
        let tokens = (0..<400).map { _ in rng.below(model.config.vocabularySize) }
        let windows = TokenWindows(tokens: tokens, range: 0..<400, context: model.config.contextLength, stride: 8)
        let trainer = LanguageModelTrainer(model: model, train: windows, validation: windows, config: config)
        // Three good steps, then a weight turns NaN (as a diverging run's would).
        var steps = 0, improvements = 0
        let stop = trainer.run(onStep: { step, _, _, _, _ in
            steps = step
            if step == 3 { model.parameters[0].value.data[0] = .nan }
        }, onEvaluation: { record, improved in
            if improved { improvements += 1; XCTAssertTrue(record.validationLoss.isFinite) }
        })
        XCTAssertEqual(stop, .nonFiniteLoss)
        XCTAssertEqual(steps, 3)
        XCTAssertEqual(trainer.step, 3)
        XCTAssertEqual(trainer.nonFiniteLoss?.step, 4)
        XCTAssertEqual(trainer.nonFiniteLoss?.epoch, (4 - 1) / trainer.stepsPerEpoch + 1)
        XCTAssertEqual(trainer.optimizer.stepCount, 3)
        XCTAssertEqual(improvements, 1, "only the step-0 evaluation, before anything went wrong")
        XCTAssertTrue(trainer.bestValidationLoss.isFinite)
    }

    // MARK: GPT checkpoints: routing and tokenizer

    /// A small MoE GPT saved with a char tokenizer, and the file's contents.
    private func savedGPT(in folder: URL) throws -> (url: URL, file: SafetensorsFile, routing: [String: Any]) {
        var rng = Xoshiro256(seed: 0)
        let text = String((0..<64).map { Character(Unicode.Scalar(UInt8(32 + $0))) })
        let tokenizer = CharTokenizer(training: text)
        var config = tinyGPTConfig(moeLayers: [1], tie: true)
        config.vocabularySize = tokenizer.vocabularySize
        let model = GPT(config: config, rng: &rng)
        let url = folder.appendingPathComponent("gpt.safetensors")
        try GPTCheckpoint.save(model, tokenizer: tokenizer, to: url)
        let file = try Safetensors.read(from: url)
        let routing = try JSONSerialization.jsonObject(with: Data(file.metadata["routing"]!.utf8)) as! [String: Any]
        return (url, file, routing)
    }

    func testRoutingSettingsInAGPTCheckpointMeetTheCommandLinesRanges() throws {
        let folder = try temporaryDirectory()
        let (good, saved, routing) = try savedGPT(in: folder)
        XCTAssertNoThrow(try GPTCheckpoint.load(from: good))
        let cases: [(field: String, value: Any, says: [String])] = [
            ("expert_dropout", "5", ["field \"expert_dropout\"", "0.0...0.99", "5.0"]),
            ("expert_dropout", "nan", ["expert_dropout"]),
            ("capacity_factor", "-1", ["field \"capacity_factor\"", "0.01"]),
            ("capacity_factor", "1e300", ["capacity_factor"]),
            ("expert_choice_factor", "0", ["field \"expert_choice_factor\""]),
            ("routed_scaling", "-2", ["field \"routed_scaling\""]),
            ("bias_rate", "-0.5", ["field \"bias_rate\""]),
            ("aux_weight", "inf", ["field \"aux_weight\""]),
            ("z_weight", "1e9", ["field \"z_weight\""]),
            ("temperature", ["0", "1", "linear"], ["field \"temperature\""]),
            ("temperature", ["1", "1"], ["field \"temperature\"", "missing"]),
            ("shared_experts", 1_000_000, ["field \"shared_experts\"", "0...64"]),
            ("shared_experts", -1, ["shared_experts"]),
            ("k", 0, ["field \"k\""]),
            ("k", 99, ["field \"k\"", "experts"]),
            ("k", 2.5, ["field \"k\"", "integer"]),
            ("k", "2", ["field \"k\""]),
            ("groups", 0, ["field \"groups\""]),
            ("router", "magic", ["field \"router\""]),
            ("balancing", ["switch", "switch"], ["field \"balancing\"", "twice"]),
            ("balancing", ["sideways"], ["field \"balancing\""]),
            ("expert_dropout", 0.5, ["field \"expert_dropout\"", "missing"]),
        ]
        let tensors = saved.order.map { ($0, saved.tensors[$0]!) }
        for c in cases {
            var r = routing
            r[c.field] = c.value
            let text = String(decoding: try JSONSerialization.data(withJSONObject: r, options: [.sortedKeys]), as: UTF8.self)
            let url = folder.appendingPathComponent("damaged.safetensors")
            try Safetensors.write(tensors, metadata: saved.metadata.merging(["routing": text]) { _, new in new }, to: url)
            expectError("\(c.field) = \(c.value)", path: url.path, says: ["metadata \"routing\""] + c.says) {
                _ = try GPTCheckpoint.load(from: url)
            }
        }
        // The command line meets the same check, under the flag's name.
        var setup = RoutingSetup()
        setup.sharedExperts = 1_000_000
        XCTAssertThrowsError(try setup.validate(experts: 8)) { error in
            XCTAssertEqual("\(error)", "--shared-experts must be in 0...64, got 1000000")
        }
    }

    func testTokenizerInACheckpointIsBoundedBeforeItIsBuilt() throws {
        let folder = try temporaryDirectory()
        let (_, saved, _) = try savedGPT(in: folder)
        let tensors = saved.order.map { ($0, saved.tensors[$0]!) }
        func tokenizer(merges: [[Int]]) -> String {
            String(decoding: try! JSONSerialization.data(withJSONObject: ["kind": "bpe", "merges": merges] as [String: Any]),
                   as: UTF8.self)
        }
        // Merges that double: token 256 + i is 2^(i+1) bytes. Forty of them would be a terabyte.
        let doubling = [[97, 97]] + (0..<39).map { [256 + $0, 256 + $0] }
        let vocabulary = saved.metadata["vocabulary_size"]!
        let cases: [(what: String, tokenizer: String, says: [String])] = [
            ("doubling merges", tokenizer(merges: doubling), ["bpe tokenizer has 296 tokens", "the model \(vocabulary)"]),
            ("a bad char tokenizer size", "{\"kind\":\"char\",\"symbols\":[\"a\",\"b\"]}", ["char tokenizer has 3 tokens"]),
        ]
        for c in cases {
            let url = folder.appendingPathComponent("damaged.safetensors")
            try Safetensors.write(tensors, metadata: saved.metadata.merging(["tokenizer": c.tokenizer]) { _, new in new }, to: url)
            expectError(c.what, path: url.path, says: c.says) { _ = try GPTCheckpoint.load(from: url) }
        }
        // With the vocabulary size matching, the lengths stop the doubling at the 64-byte cap.
        expectError("doubling merges, matching size", path: "tok.json", says: ["bpe merge 6", "128 bytes", "64"]) {
            _ = try BPETokenizer(merges: doubling, source: "tok.json", expectedVocabularySize: 256 + doubling.count)
        }
        expectError("a merge of a later token", path: "tok.json", says: ["bpe merge 0"]) {
            _ = try BPETokenizer(merges: [[256, 1]], source: "tok.json")
        }
    }

    // MARK: Reading paths

    func testPathsThatAreNotRegularFilesSayWhat() throws {
        let folder = try temporaryDirectory()
        let cases: [(path: String, says: String)] = [
            ("/dev/zero", "not a regular file (a character device)"),
            (folder.path, "is a folder"),
            (folder.appendingPathComponent("missing").path, "no such file"),
            ("", "empty path"),
        ]
        for c in cases {
            XCTAssertEqual(InputFile.problem(with: c.path)?.contains(c.says), true, "\(c.path): \(InputFile.problem(with: c.path) ?? "nil")")
        }
        expectError("/dev/zero as safetensors", path: "/dev/zero", says: ["character device"]) {
            _ = try Safetensors.read(from: URL(fileURLWithPath: "/dev/zero"))
        }
        expectError("/dev/zero as text", path: "/dev/zero", says: ["character device"]) {
            _ = try TextCorpus.load(URL(fileURLWithPath: "/dev/zero"))
        }
        let file = folder.appendingPathComponent("ok.txt")
        try Data("hello".utf8).write(to: file)
        XCTAssertNil(InputFile.problem(with: file.path))
    }

    // MARK: Stale temporary files

    /// A write killed before its rename leaves `.NAME.tmp-PID-RANDOM`; the next
    /// write of NAME removes it when PID is gone, and touches nothing else.
    func testAtomicWriteRemovesStaleTemporaryFilesOfItsOwn() throws {
        let folder = try temporaryDirectory()
        let names = [".a.json.tmp-99999999-123",   // a process that cannot exist (above Linux's pid_max): stale
                     ".a.json.tmp-1-456",          // pid 1 is alive: left alone
                     ".b.json.tmp-99999999-789",   // another file's: left alone
                     ".a.json.tmp-notes"]          // not our pattern: left alone
        for name in names { try Data("partial".utf8).write(to: folder.appendingPathComponent(name)) }
        try AtomicFile.write(Data("{}".utf8), to: folder.appendingPathComponent("a.json"))
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: folder.path))
        XCTAssertEqual(left, ["a.json", ".a.json.tmp-1-456", ".b.json.tmp-99999999-789", ".a.json.tmp-notes"])
    }
}
