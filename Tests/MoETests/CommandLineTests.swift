// Tests for the `mnist-moe` command, run as a user runs it: the built executable
// in a subprocess, its exit status, standard output and standard error.
//
// What a user must be able to count on:
//   * status 0: it worked; the tables are on stdout and the files in --out.
//   * status 2: the command line is wrong. One line "mnist-moe: …" naming the
//     flag and where the usage is, on stderr; nothing on stdout, nothing done.
//   * status 1: the command line is fine but something else is not (a missing
//     or broken data file). One line "mnist-moe: FILE: problem" on stderr.
//   * never a crash (a signal), whatever the files hold.
//
// The executable sits in the products directory next to the test bundle;
// `swift test` builds it with everything else. Each run has a timeout, so a
// hang is a failure rather than a stuck test suite (CommandLineHarness.swift).

import Foundation
import XCTest
@testable import MoE

final class CommandLineTests: CommandLineTestCase {
    override class var program: String { "mnist-moe" }
    /// MNIST where a user keeps it, or a one-line skip (TestSupport.swift).
    private func requireMNIST() throws -> URL { try TestData.requireMNIST() }

    // MARK: --help

    func testHelpListsEveryFlagAndExitsZero() throws {
        _ = try executable()   // the program must be built
        let outcome = try run(["--help"])
        XCTAssertEqual(outcome.status, 0, outcome.summary)
        XCTAssertEqual(outcome.reason, .exit)
        XCTAssertEqual(outcome.stderr, "", "help goes to stdout")
        XCTAssertTrue(outcome.stdout.hasPrefix("usage: mnist-moe [options]"), outcome.stdout)

        let documented = ["--train-size", "--epochs", "--batch-size", "--lr", "--aux-weight", "--experts", "--top-k",
                          "--hidden", "--expert-hidden", "--model", "--seed", "--threads", "--data-dir", "--no-download",
                          "--out", "--init", "--resume", "--no-shuffle", "-h", "--help",
                          "--variant", "--normalize", "--subset", "--seeds",
                          // routing and balancing
                          "--router", "--order", "--no-renormalize", "--gate-noise", "--gate-bias", "--no-gate-bias",
                          "--temperature", "--temperature-end",
                          "--temperature-schedule", "--expert-dropout", "--capacity", "--overflow", "--shared-experts",
                          "--balance", "--z-weight", "--bias-rate", "--groups", "--top-groups", "--routed-scaling",
                          "--expert-choice-factor"]
        let parsed = try flagsInParser()
        XCTAssertEqual(parsed, Set(documented), "the parser's flags and this list drifted apart")
        // Each flag as a word of its own (so "--epochs" is not found inside "--epochs-x").
        let words = Set(outcome.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "," }).map(String.init))
        for flag in parsed.union(documented) {
            XCTAssertTrue(words.contains(flag), "--help does not list \(flag)")
        }
        // -h is the same as --help.
        XCTAssertEqual(try run(["-h"]).stdout, outcome.stdout)
    }

    // MARK: Usage errors (status 2)

    func testBadCommandLinesExitTwoWithOneLineNamingTheFlagAndWhereTheUsageIs() throws {
        // Should a bad command line ever be accepted, these make the run stop at
        // the missing data (status 1) instead of downloading and training.
        let empty = try temporaryDirectory("empty")
        let guardrails = ["--data-dir", empty.path, "--no-download", "--out", empty.path]

        let cases: [(arguments: [String], flag: String, says: String)] = [
            (["--bogus"], "--bogus", "unknown option"),
            (["--epoch", "3"], "--epoch", "did you mean --epochs?"),
            (["--trian-size", "3"], "--trian-size", "did you mean --train-size?"),
            (["epochs", "3"], "epochs", "did you mean --epochs?"),
            (["--router", "swich"], "--router", "did you mean switch?"),
            (["--epochs"], "--epochs", "needs a value"),
            (["--epochs", "-1"], "--epochs", "'-1'"),
            (["--lr", "abc"], "--lr", "'abc'"),
            (["--model", "both", "--resume", "x"], "--resume", "--model moe"),
            (["--resume", "x"], "--resume", "--model moe"),        // both is the default
            (["--top-k", "9"], "--top-k", "--experts 8"),          // 8 experts is the default
            (["--experts", "8", "--top-k", "9"], "--top-k", "--experts 8"),
            (["--model", "sparse"], "--model", "'sparse'"),
            (["--seed", "-3"], "--seed", "'-3'"),
            (["--router", "magic"], "--router", "'magic'"),
            (["--order", "backwards"], "--order", "'backwards'"),
            (["--overflow", "random"], "--overflow", "'random'"),
            (["--balance", "switch,foo"], "--balance", "'foo'"),
            (["--balance", "z,z"], "--balance", "twice"),
            (["--temperature-schedule", "constant"], "--temperature-schedule", "'constant'"),
            (["--capacity", "0"], "--capacity", "'0'"),
            (["--router", "deepseek", "--groups", "3"], "--groups", "divide the 8 experts"),
            (["ablate", "--init", "w.safetensors"], "--init", "from scratch"),
        ]
        for (arguments, flag, says) in cases {
            let outcome = try run(guardrails + arguments)
            let what = "mnist-moe \(arguments.joined(separator: " "))"
            XCTAssertEqual(outcome.status, 2, "\(what)\n\(outcome.summary)")
            XCTAssertEqual(outcome.reason, .exit, what)
            XCTAssertEqual(outcome.stdout, "", "\(what): printed to stdout")
            let lines = outcome.errorLines
            guard let first = lines.first else { XCTFail("\(what): nothing on stderr"); continue }
            XCTAssertTrue(first.hasPrefix("mnist-moe: "), "\(what): \(first)")
            XCTAssertTrue(first.contains(flag), "\(what): the error does not name \(flag): \(first)")
            XCTAssertTrue(first.contains(says), "\(what): expected '\(says)' in: \(first)")
            XCTAssertTrue(first.hasSuffix("(mnist-moe --help lists every option)"), "\(what): \(first)")
            XCTAssertEqual(lines.count, 1, "\(what): one line, not the usage:\n\(outcome.stderr)")
        }
    }

    // MARK: Data errors (status 1)

    /// A plain (not gzipped) IDX images file: magic 0x00000803, count, rows, cols, then the pixels.
    private func idxImageBytes(count: Int, rows: Int = 2, cols: Int = 2) -> [UInt8] {
        func be32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * $0)) } }
        return be32(0x803) + be32(count) + be32(rows) + be32(cols) + [UInt8](repeating: 200, count: count * rows * cols)
    }

    /// A plain IDX labels file: magic 0x00000801, count, then `labels`; `announced` overrides the count.
    private func idxLabelBytes(_ labels: [UInt8], announced: Int? = nil) -> [UInt8] {
        func be32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * $0)) } }
        return be32(0x801) + be32(announced ?? labels.count) + labels
    }

    /// A tiny valid data folder (plain IDX files: 4 training and 3 test images of 2x2),
    /// with the files named in `replace` swapped for the given bytes and file names.
    private func brokenDataFolder(_ replace: [String: (fileName: String, bytes: [UInt8])]) throws -> URL {
        let folder = try temporaryDirectory("data")
        let valid: [String: [UInt8]] = [
            "train-images-idx3-ubyte": idxImageBytes(count: 4), "train-labels-idx1-ubyte": idxLabelBytes([0, 1, 2, 3]),
            "t10k-images-idx3-ubyte": idxImageBytes(count: 3), "t10k-labels-idx1-ubyte": idxLabelBytes([4, 5, 6]),
        ]
        for name in MNIST.fileNames {
            let (fileName, bytes) = replace[name] ?? (name, valid[name]!)
            try Data(bytes).write(to: folder.appendingPathComponent(fileName))
        }
        return folder
    }

    func testBrokenDataFilesExitOneWithOneLineNamingTheFile() throws {
        var cases: [(what: String, folder: URL, file: String, says: String)] = []

        // Labels announcing 5 but holding 2.
        cases.append(("truncated labels",
                      try brokenDataFolder(["t10k-labels-idx1-ubyte": ("t10k-labels-idx1-ubyte", idxLabelBytes([1, 2], announced: 5))]),
                      "t10k-labels-idx1-ubyte", "truncated: header says 5 labels but only 2 bytes follow"))
        // An images file where the labels should be.
        cases.append(("wrong kind of file",
                      try brokenDataFolder(["train-labels-idx1-ubyte": ("train-labels-idx1-ubyte", idxImageBytes(count: 4))]),
                      "train-labels-idx1-ubyte", "not the expected IDX file"))
        // A label out of 0...9.
        cases.append(("corrupt label",
                      try brokenDataFolder(["train-labels-idx1-ubyte": ("train-labels-idx1-ubyte", idxLabelBytes([0, 1, 77, 3]))]),
                      "train-labels-idx1-ubyte", "outside 0...9"))
        // A .gz that is the gzip magic and then garbage.
        cases.append(("corrupt gzip",
                      try brokenDataFolder(["t10k-images-idx3-ubyte": ("t10k-images-idx3-ubyte.gz",
                                                                      [0x1F, 0x8B, 0x08, 0x00] + [UInt8](repeating: 0xFF, count: 40))]),
                      "t10k-images-idx3-ubyte.gz", "corrupt"))
        // The first 64 KiB of the real 9.7 MB training images, as a download cut short leaves it.
        if let real = try? Data(contentsOf: (TestData.mnistFolder ?? TestData.root).appendingPathComponent("train-images-idx3-ubyte.gz")) {
            cases.append(("truncated real .gz",
                          try brokenDataFolder(["train-images-idx3-ubyte": ("train-images-idx3-ubyte.gz", [UInt8](real.prefix(65_536)))]),
                          "train-images-idx3-ubyte.gz", "truncated"))
        }

        for (what, folder, file, says) in cases {
            let outcome = try run(["--data-dir", folder.path, "--no-download", "--out", folder.path, "--epochs", "1"])
            XCTAssertEqual(outcome.status, 1, "\(what)\n\(outcome.summary)")
            XCTAssertEqual(outcome.reason, .exit, "\(what): crashed\n\(outcome.summary)")
            let lines = outcome.errorLines
            note("\(what) → \(lines.first ?? "(nothing)")")
            XCTAssertEqual(lines.count, 1, "\(what): expected one line on stderr\n\(outcome.stderr)")
            let message = lines.first ?? ""
            XCTAssertTrue(message.hasPrefix("mnist-moe: "), "\(what): \(message)")
            XCTAssertTrue(message.contains(folder.appendingPathComponent(file).path), "\(what): does not name \(file): \(message)")
            XCTAssertTrue(message.contains(says), "\(what): expected '\(says)' in: \(message)")
        }
    }

    func testAnEmptyDataFolderWithoutDownloadingNamesTheMissingFiles() throws {
        let folder = try temporaryDirectory("empty")
        let outcome = try run(["--data-dir", folder.path, "--no-download", "--out", folder.path])
        XCTAssertEqual(outcome.status, 1, outcome.summary)
        XCTAssertEqual(outcome.reason, .exit)
        XCTAssertEqual(outcome.errorLines.count, 1, outcome.stderr)
        let message = outcome.errorLines.first ?? ""
        note("empty folder → \(message)")
        XCTAssertTrue(message.hasPrefix("mnist-moe: \(folder.path)"), message)
        XCTAssertTrue(message.contains("missing"), message)
        for name in MNIST.fileNames { XCTAssertTrue(message.contains(name), "\(name) not named: \(message)") }
        XCTAssertTrue(message.contains("--no-download"), "says how to fetch them: \(message)")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), [], "downloaded or wrote anyway")
    }

    // MARK: A real run

    private func assertDistribution(_ value: Any?, count: Int, _ what: String, line: UInt = #line) {
        guard let shares = value as? [Double] else { return XCTFail("\(what): not an array of numbers", line: line) }
        XCTAssertEqual(shares.count, count, what, line: line)
        // Tolerance: a sum of ≤ 8 Doubles each written as decimal text.
        XCTAssertEqual(shares.reduce(0, +), 1, accuracy: 1e-9, what, line: line)
        XCTAssertTrue(shares.allSatisfy { $0 >= 0 && $0 <= 1 }, "\(what): \(shares)", line: line)
    }

    /// 512 images, 1 epoch, both models: status 0, the tables, and every file of --out,
    /// each read back. Then --resume continues the MoE to epoch 2, and lands on exactly
    /// the weights a straight 2-epoch run gives.
    /// --epochs 0 trains nothing and says so: no "nan" in the tables, "0 epochs" and "1 epoch" in words.
    func testZeroAndOneEpochsReadProperly() throws {
        let data = try requireMNIST()
        for (epochs, words) in [("0", "0 epochs"), ("1", "1 epoch,")] {
            let out = try temporaryDirectory("epochs-\(epochs)")
            let outcome = try run(["--data-dir", data.path, "--no-download", "--train-size", "64", "--epochs", epochs,
                                   "--model", "moe", "--out", out.path], timeout: 600)
            XCTAssertEqual(outcome.status, 0, outcome.summary)
            XCTAssertTrue(outcome.stdout.contains(words), outcome.stdout)
            XCTAssertFalse(outcome.stdout.lowercased().contains("nan"), outcome.stdout)
        }
        // The dense model alone has no router to describe.
        let dense = try run(["--data-dir", data.path, "--no-download", "--train-size", "64", "--epochs", "0",
                             "--model", "dense", "--out", try temporaryDirectory("dense-only").path], timeout: 600)
        XCTAssertEqual(dense.status, 0, dense.summary)
        XCTAssertFalse(dense.stdout.contains("MoE routing"), dense.stdout)
        XCTAssertTrue(dense.stdout.contains("Model: the dense baseline"), dense.stdout)
    }

    /// Routing flags reach the model: Switch top-1 with a capacity and a shared
    /// expert; the report says what capacity dropped, summary.json records the setup.
    func testRoutingFlagsChangeTheModelAndAreRecorded() throws {
        let data = try requireMNIST()
        let out = try temporaryDirectory("routing")
        let outcome = try run(["--data-dir", data.path, "--no-download", "--train-size", "256", "--epochs", "1",
                               "--model", "moe", "--router", "switch", "--capacity", "1", "--overflow", "score",
                               "--shared-experts", "1", "--balance", "switch,z", "--out", out.path], timeout: 600)
        XCTAssertEqual(outcome.status, 0, outcome.summary)
        guard outcome.status == 0 else { return }
        XCTAssertTrue(outcome.stdout.contains("MoE routing: switch top-1, learned noise, capacity 1.0 score, 1 shared, switch α=0.1 + z 0.001"),
                      outcome.stdout)
        XCTAssertTrue(outcome.stdout.contains("Capacity dropped"), outcome.stdout)
        XCTAssertTrue(outcome.stdout.contains("perfect balance 1, total collapse 8"), "top-1: balanced Switch loss is 1")
        let summary = try readJSON(out.appendingPathComponent("summary.json"))
        let routing = try XCTUnwrap((summary["config"] as? [String: Any])?["routing"] as? [String: Any])
        XCTAssertEqual(routing["router"] as? String, "switch")
        XCTAssertEqual(routing["k"] as? Int, 1)
        XCTAssertEqual(routing["capacity_factor"] as? Double, 1)
        XCTAssertEqual(routing["overflow"] as? String, "score")
        XCTAssertEqual(routing["shared_experts"] as? Int, 1)
        XCTAssertEqual(routing["balancing"] as? [String], ["switch", "z"])
        let model = try XCTUnwrap((summary["models"] as? [[String: Any]])?.first)
        // 8 routed experts + 1 shared, top-1: the gate, one routed and the shared expert per image.
        let expert = 2 * 256 * 128 + 128 + 256
        XCTAssertEqual(model["params_total"] as? Int, 732_946 + expert)
        XCTAssertEqual(model["params_active"] as? Int, 337_426)
    }

    /// Mirrors that fail: one line of error that names every file's errors and
    /// the three ways to point mnist-moe at MNIST.
    func testFailedDownloadsNameEveryFileAndTheWaysToPointAtTheData() throws {
        let empty = try temporaryDirectory("no-mnist")
        let outcome = try run(["--data-dir", empty.path, "--out", empty.path],
                              environment: ["MNIST_MIRRORS": "http://127.0.0.1:9/"])   // port 9: nothing listens
        XCTAssertEqual(outcome.status, 1, outcome.summary)
        let message = outcome.errorLines.last ?? ""
        for part in ["train-images-idx3-ubyte.gz (", "t10k-labels-idx1-ubyte.gz (", "--data-dir", "$MNIST_DIR", "MNIST_MIRRORS"] {
            XCTAssertTrue(message.contains(part), "'\(part)' not in: \(message)")
        }
        XCTAssertEqual(outcome.errorLines.count, 1, outcome.stderr)
        // The failing mirror was shown as it failed, within 80 columns; refused once,
        // it is not tried again for the other three files.
        let attempts = outcome.stdout.split(separator: "\n").filter { $0.contains("failed:") }
        XCTAssertEqual(attempts.count, 1, outcome.stdout)
        XCTAssertTrue(message.contains("not tried"), message)
        XCTAssertTrue(attempts.allSatisfy { $0.count < 80 }, outcome.stdout)
        let help = try run(["--help"]).stdout
        for word in ["--data-dir", "$MNIST_DIR", "MNIST_MIRRORS"] { XCTAssertTrue(help.contains(word), "--help lacks \(word)") }
    }

    /// A router from Sources/Exercises, chosen by name (RouterRegistry.swift):
    /// trained like a built-in one, and reported as the top-1 router it is —
    /// k = 1 and top-1's balance value — not as the default top-2.
    func testAnExerciseRouterTrainsFromTheCommandLineAndIsReportedAsItIs() throws {
        let data = try requireMNIST()
        let out = try temporaryDirectory("exercise-router")
        let outcome = try run(["--data-dir", data.path, "--no-download", "--train-size", "128", "--epochs", "1",
                               "--model", "moe", "--router", "exercise1", "--out", out.path], timeout: 600)
        XCTAssertEqual(outcome.status, 0, outcome.summary)
        guard outcome.status == 0 else { return }
        XCTAssertTrue(outcome.stdout.contains("MoE routing: exercise1 k=1, switch α=0.1"), outcome.stdout)
        XCTAssertTrue(outcome.stdout.contains("perfect balance 1, total collapse 8"), "top-1's balance value: \(outcome.stdout)")
        let summary = try readJSON(out.appendingPathComponent("summary.json"))
        let routing = try XCTUnwrap((summary["config"] as? [String: Any])?["routing"] as? [String: Any])
        XCTAssertEqual(routing["router"] as? String, "exercise1")
        XCTAssertEqual(routing["k"] as? Int, 1)
        XCTAssertEqual((summary["config"] as? [String: Any])?["top_k"] as? Int, 1)
    }

    /// `ablate` trains every preset once and writes one entry per configuration.
    func testAblateRunsEveryPresetAndWritesTheTable() throws {
        let data = try requireMNIST()
        let out = try temporaryDirectory("ablate")
        let outcome = try run(["ablate", "--data-dir", data.path, "--no-download", "--train-size", "128",
                               "--epochs", "1", "--out", out.path], timeout: 600)
        XCTAssertEqual(outcome.status, 0, outcome.summary)
        guard outcome.status == 0 else { return }
        XCTAssertTrue(outcome.stdout.contains("Routing ablation"), outcome.stdout)
        let summary = try readJSON(out.appendingPathComponent("summary.json"))
        let configurations = try XCTUnwrap(summary["configurations"] as? [[String: Any]], "configurations")
        XCTAssertGreaterThanOrEqual(configurations.count, 15)
        let routers = Set(configurations.compactMap { ($0["routing"] as? [String: Any])?["router"] as? String })
        XCTAssertEqual(routers, Set(RoutingSetup.routers), "every router appears in the preset list")
        for c in configurations {
            let name = c["name"] as? String ?? "?"
            XCTAssertTrue(outcome.stdout.contains(name), "\(name) has a row")
            assertDistribution(c["expert_usage"], count: 8, "\(name): expert_usage")
            let dropped = try XCTUnwrap(c["dropped_share"] as? Double, name)
            let hasCapacity = (c["routing"] as? [String: Any])?["capacity_factor"] != nil
            XCTAssertTrue(hasCapacity || dropped == 0, "\(name): only a capacity drops slots")
            let entropy = try XCTUnwrap(c["router_entropy"] as? Double, name)
            XCTAssertTrue(entropy >= 0 && entropy <= log(8) + 1e-9, "\(name): entropy \(entropy)")
            let top2 = try XCTUnwrap(c["top2_share"] as? Double, name)
            XCTAssertTrue(top2 >= 0.25 - 1e-9 && top2 <= 1 + 1e-9, "\(name): two experts hold at least 2/8")
        }
        let svg = try readSVG(out.appendingPathComponent("ablation.svg"))
        XCTAssertGreaterThanOrEqual(svg.counts["rect", default: 0], configurations.count, "a bar per configuration")
    }

    func testATinyRealRunWritesEverythingAndResumes() throws {
        let data = try requireMNIST()
        let work = try temporaryDirectory("run")
        let out = work.appendingPathComponent("first")
        let common = ["--data-dir", data.path, "--no-download", "--train-size", "512"]

        // 1. The run.
        let outcome = try run(common + ["--epochs", "1", "--out", out.path], in: work, timeout: 600)
        XCTAssertEqual(outcome.status, 0, outcome.summary)
        XCTAssertEqual(outcome.reason, .exit)
        guard outcome.status == 0 else { return }
        for title in ["Experimental setup", "Accuracy comparison", "Parameter efficiency",
                      "Expert specialization", "Expert usage", "Router entropy"] {
            XCTAssertTrue(outcome.stdout.contains(title), "no '\(title)' in the output\n\(outcome.stdout)")
        }
        XCTAssertTrue(outcome.stdout.contains("732,946") && outcome.stdout.contains("337,426")
                      && outcome.stdout.contains("269,450"), "parameter counts in the tables")

        // 2. summary.json.
        let summary = try readJSON(out.appendingPathComponent("summary.json"))
        let config = try XCTUnwrap(summary["config"] as? [String: Any], "config")
        XCTAssertEqual(config["train_size"] as? Int, 512)
        XCTAssertEqual(config["epochs"] as? Int, 1)
        XCTAssertEqual(config["model"] as? String, "both")
        XCTAssertEqual(config["experts"] as? Int, 8)
        XCTAssertEqual(config["top_k"] as? Int, 2)
        let models = try XCTUnwrap(summary["models"] as? [[String: Any]], "models")
        XCTAssertEqual(models.map { $0["name"] as? String }, ["moe", "dense"])
        let expectedCounts: [String: (total: Int, active: Int)] = ["moe": (732_946, 337_426), "dense": (269_450, 269_450)]
        var firstEpochLoss: Double?
        for model in models {
            let name = model["name"] as? String ?? "?"
            XCTAssertEqual(model["params_total"] as? Int, expectedCounts[name]?.total, name)
            XCTAssertEqual(model["params_active"] as? Int, expectedCounts[name]?.active, name)
            let seconds = try XCTUnwrap(model["train_seconds"] as? Double, "\(name): train_seconds")
            XCTAssertGreaterThan(seconds, 0, name)
            let accuracy = try XCTUnwrap(model["test_accuracy"] as? Double, "\(name): test_accuracy")
            // 8 Adam steps from random weights: far above chance (10%), far from done.
            XCTAssertTrue(accuracy > 0.3 && accuracy <= 1, "\(name): test accuracy \(accuracy)")
            let epochs = try XCTUnwrap(model["epochs"] as? [[String: Any]], "\(name): epochs")
            XCTAssertEqual(epochs.map { $0["epoch"] as? Int }, [1], name)
            XCTAssertEqual(epochs.first?["test_accuracy"] as? Double, accuracy, "\(name): the last epoch's test accuracy")
            if name == "moe" {
                firstEpochLoss = epochs.first?["train_loss"] as? Double
                assertDistribution(model["expert_usage"], count: 8, "expert_usage")
                let specialization = try XCTUnwrap(model["specialization"] as? [[Double]], "specialization")
                XCTAssertEqual(specialization.count, 10)
                for (digit, row) in specialization.enumerated() {
                    assertDistribution(row, count: 8, "specialization of digit \(digit)")
                    XCTAssertTrue(row.allSatisfy { $0 <= 0.5 + 1e-9 }, "top-2: no expert holds more than half a digit")
                }
            } else {
                XCTAssertNil(model["expert_usage"], "the dense model has no routing")
            }
        }

        // 3. The plots, as XML.
        let curves = try readSVG(out.appendingPathComponent("learning_curves.svg"))
        XCTAssertTrue(curves.text.contains("Accuracy per epoch"), curves.text)
        let losses = try readSVG(out.appendingPathComponent("loss_curves.svg"))
        XCTAssertTrue(losses.text.contains("MoE α·aux") && losses.text.contains("dense cross-entropy"), losses.text)
        let heatmap = try readSVG(out.appendingPathComponent("specialization.svg"))
        XCTAssertGreaterThanOrEqual(heatmap.counts["rect", default: 0], 80, "a cell per digit and expert")
        XCTAssertTrue(heatmap.text.contains("Digit"), heatmap.text)
        let usage = try readSVG(out.appendingPathComponent("expert_usage.svg"))
        XCTAssertGreaterThanOrEqual(usage.counts["rect", default: 0], 8, "a bar per expert")

        // 4. The checkpoints, read back and loaded into fresh models.
        let moeFile = try Safetensors.read(from: out.appendingPathComponent("moe.safetensors"))
        let denseFile = try Safetensors.read(from: out.appendingPathComponent("dense.safetensors"))
        XCTAssertEqual(moeFile.order.count, 2 + 2 + 8 * 4 + 2, "input_proj, gate and noise weights, 8 experts of 4 tensors, output_proj")
        XCTAssertEqual(denseFile.order, ["input_proj.weight", "input_proj.bias", "ffn.net.0.weight", "ffn.net.0.bias",
                                         "ffn.net.2.weight", "ffn.net.2.bias", "output_proj.weight", "output_proj.bias"])
        XCTAssertEqual(moeFile.metadata["source"], "mnist-moe")
        var rng = Xoshiro256(seed: 1)
        try Checkpoint.loadWeights(into: MoEClassifier(rng: &rng), from: out.appendingPathComponent("moe.safetensors"))
        try Checkpoint.loadWeights(into: DenseClassifier(rng: &rng), from: out.appendingPathComponent("dense.safetensors"))
        let resumeFile = out.appendingPathComponent("moe.resume.safetensors")
        XCTAssertEqual(try Safetensors.read(from: resumeFile).metadata["epochs_done"], "1")

        // 5. --resume to epoch 2.
        let resumedOut = work.appendingPathComponent("resumed")
        let resumed = try run(common + ["--model", "moe", "--epochs", "2", "--resume", resumeFile.path,
                                        "--out", resumedOut.path], in: work, timeout: 600)
        XCTAssertEqual(resumed.status, 0, resumed.summary)
        XCTAssertTrue(resumed.stdout.contains("resuming after epoch 1"), resumed.stdout)
        let resumedModels = try XCTUnwrap(try readJSON(resumedOut.appendingPathComponent("summary.json"))["models"]
                                          as? [[String: Any]])
        XCTAssertEqual(resumedModels.map { $0["name"] as? String }, ["moe"])
        let resumedEpochs = try XCTUnwrap(resumedModels.first?["epochs"] as? [[String: Any]])
        XCTAssertEqual(resumedEpochs.map { $0["epoch"] as? Int }, [1, 2], "epoch 1 from the file, epoch 2 trained")
        // Epoch 1's record comes back from the resume file (JSON text both ways: compare to 1e-12).
        if let loss = firstEpochLoss, let back = resumedEpochs.first?["train_loss"] as? Double {
            XCTAssertEqual(back, loss, accuracy: 1e-12 * abs(loss))
        } else {
            XCTFail("epoch 1 train_loss missing")
        }
        XCTAssertEqual(try Safetensors.read(from: resumedOut.appendingPathComponent("moe.resume.safetensors"))
                        .metadata["epochs_done"], "2")

        // 6. The same two epochs without stopping: the same bits.
        let straightOut = work.appendingPathComponent("straight")
        let straight = try run(common + ["--model", "moe", "--epochs", "2", "--out", straightOut.path], in: work, timeout: 600)
        XCTAssertEqual(straight.status, 0, straight.summary)
        let a = try Safetensors.read(from: resumedOut.appendingPathComponent("moe.safetensors"))
        let b = try Safetensors.read(from: straightOut.appendingPathComponent("moe.safetensors"))
        XCTAssertEqual(a.order, b.order)
        let differing = a.order.filter { a.tensors[$0]?.data.map(\.bitPattern) != b.tensors[$0]?.data.map(\.bitPattern) }
        XCTAssertEqual(differing, [], "resumed and straight 2-epoch runs differ")
    }
}
