// The programs as a hostile user meets them: empty paths, devices, flag values
// that name nothing, sizes that cannot fit, damaged numbers inside valid files,
// and a run whose loss turns non-finite. Each gets exit 1 (a bad file or data)
// or 2 (a usage mistake), one line on stderr naming the file or flag, and no
// file written over a good one. The data is a tiny MNIST of 2x2 images, so
// every run takes well under a second.
import XCTest
@testable import MoE

/// A folder of plain IDX files: `train` training and `test` test images of `side`×`side`.
private func tinyMNIST(in folder: URL, train: Int = 4, test: Int = 3, side: Int = 2) throws {
    func be32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * $0)) } }
    func images(_ n: Int) -> [UInt8] { be32(0x803) + be32(n) + be32(side) + be32(side) + (0..<(n * side * side)).map { UInt8($0 % 251) } }
    func labels(_ n: Int) -> [UInt8] { be32(0x801) + be32(n) + (0..<n).map { UInt8($0 % 10) } }
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    try Data(images(train)).write(to: folder.appendingPathComponent("train-images-idx3-ubyte"))
    try Data(labels(train)).write(to: folder.appendingPathComponent("train-labels-idx1-ubyte"))
    try Data(images(test)).write(to: folder.appendingPathComponent("t10k-images-idx3-ubyte"))
    try Data(labels(test)).write(to: folder.appendingPathComponent("t10k-labels-idx1-ubyte"))
}

extension CommandLineTestCase {
    /// The run failed with `status` and exactly one line on stderr (before any usage text) containing `says`.
    func assertFails(_ outcome: Outcome, status: Int32, says: [String], _ what: String, line: UInt = #line) {
        XCTAssertEqual(outcome.status, status, "\(what): \(outcome.summary)", line: line)
        XCTAssertEqual(outcome.reason, .exit, "\(what): \(outcome.summary)", line: line)
        let first = outcome.errorLines.first ?? ""
        XCTAssertTrue(first.hasPrefix("\(Self.program): "), "\(what): \(outcome.summary)", line: line)
        if status == 1 { XCTAssertEqual(outcome.errorLines.count, 1, "\(what): \(outcome.summary)", line: line) }
        for word in says { XCTAssertTrue(first.contains(word), "\(what): '\(word)' not in: \(first)", line: line) }
    }
}

final class DamagedInputMNISTTests: CommandLineTestCase {
    override class var program: String { "mnist-moe" }

    private func dataFolder(side: Int = 2, train: Int = 4, test: Int = 3) throws -> URL {
        let folder = try temporaryDirectory("data")
        try tinyMNIST(in: folder, train: train, test: test, side: side)
        return folder
    }

    private func tinyRun(_ data: URL, _ out: URL) -> [String] {
        ["--data-dir", data.path, "--no-download", "--train-size", "4", "--epochs", "1", "--hidden", "8",
         "--expert-hidden", "4", "--experts", "4", "--threads", "1", "--out", out.path]
    }

    func testEmptyValuesAndDevicesAreNamed() throws {
        let data = try dataFolder(), out = try temporaryDirectory("out")
        for flag in ["--init", "--resume", "--out", "--data-dir"] {
            assertFails(try run(tinyRun(data, out) + [flag, ""] + (flag == "--resume" ? ["--model", "moe"] : [])),
                        status: 2, says: ["\(flag) needs a value, got an empty one"], "\(flag) \"\"")
        }
        assertFails(try run(tinyRun(data, out) + ["--init", "/dev/zero"]), status: 1,
                    says: ["/dev/zero", "not a regular file (a character device)"], "--init /dev/zero")
        assertFails(try run(tinyRun(data, out) + ["--init", out.path]), status: 1, says: [out.path, "is a folder"], "--init FOLDER")
        for value in ["", "switch,", ",z", "switch,,z"] {
            assertFails(try run(tinyRun(data, out) + ["--balance", value]), status: 2, says: ["--balance", "empty method"],
                        "--balance '\(value)'")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path), [], "nothing written")
    }

    func testSizesThatCannotFitAreRefusedBeforeAllocating() throws {
        let data = try dataFolder(), out = try temporaryDirectory("out")
        // 1,024 experts of 256 → 65,536 → 256: 34 billion weights.
        assertFails(try run(tinyRun(data, out) + ["--hidden", "256", "--experts", "1024", "--expert-hidden", "65536"]),
                    status: 2, says: ["needs about", "billion parameters", "memory budget", "--expert-hidden"], "1024 experts")
        assertFails(try run(tinyRun(data, out) + ["--hidden", "65536", "--expert-hidden", "65536"]),
                    status: 2, says: ["needs about", "memory budget"], "--hidden 65536 --expert-hidden 65536")
        // Images of 4096x4096 (one per split): valid IDX, but the input layer alone would be
        // 16.8 million × 256 weights. Bad data, exit 1, and the message names the folder.
        let huge = try dataFolder(side: 4096, train: 1, test: 1)
        assertFails(try run(["--data-dir", huge.path, "--no-download", "--train-size", "1", "--epochs", "1",
                             "--threads", "1", "--out", out.path]),
                    status: 1, says: ["needs about", "memory budget", huge.path, "4096x4096"], "4096x4096 images")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path), [], "nothing written")
    }

    /// A resume file that claims more epochs than the run has, and one whose
    /// Adam state makes the next update overflow: the second must stop at the
    /// first non-finite loss, naming the epoch and step, and leave every file of
    /// the first run as it was.
    func testResumeThatDivergesStopsAndKeepsTheGoodFiles() throws {
        let data = try dataFolder(), out = try temporaryDirectory("out")
        let first = try run(tinyRun(data, out) + ["--model", "moe"])
        XCTAssertEqual(first.status, 0, first.summary)
        let resume = out.appendingPathComponent("moe.resume.safetensors")
        let weights = out.appendingPathComponent("moe.safetensors")

        assertFails(try run(tinyRun(data, out) + ["--model", "moe", "--resume", resume.path, "--epochs", "0"]),
                    status: 1, says: [resume.path, "1 epochs done, more than --epochs 0"], "--epochs 0 after 1")

        // m = 3e38 everywhere: finite, so the file is accepted, but the first update
        // is lr·m̂/(√v̂ + ε) with m̂ > Float.max: every weight becomes ±∞.
        let saved = try Safetensors.read(from: resume)
        let damaged = out.appendingPathComponent("diverging.resume.safetensors")
        try Safetensors.write(saved.order.map { name -> (String, Tensor) in
            var t = saved.tensors[name]!
            if name.hasPrefix("optimizer.m.") { t.data = [Float](repeating: 3e38, count: t.count) }
            if name.hasPrefix("optimizer.v.") { t.data = [Float](repeating: 0, count: t.count) }
            return (name, t)
        }, metadata: saved.metadata, to: damaged)
        let before = try [resume, weights].map { try Data(contentsOf: $0) }
        let listing = Set(try FileManager.default.contentsOfDirectory(atPath: out.path))
        // Epoch 2's one step turns the weights infinite; epoch 3's loss is not finite.
        let outcome = try run(tinyRun(data, out) + ["--model", "moe", "--resume", damaged.path, "--epochs", "3"])
        assertFails(outcome, status: 1, says: ["moe: the loss became", "at epoch 3, step 1", "stopped"], "diverging resume")
        XCTAssertEqual(try [resume, weights].map { try Data(contentsOf: $0) }, before, "the good files were overwritten")
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: out.path)), listing, "a file was added")

        // NaN weights given to --init are refused on load, by tensor name.
        let nan = out.appendingPathComponent("nan.safetensors")
        let good = try Safetensors.read(from: weights)
        let firstName = good.order[0]
        try Safetensors.write(good.order.map { name -> (String, Tensor) in
            var t = good.tensors[name]!
            if name == firstName { t.data[0] = .nan }
            return (name, t)
        }, metadata: good.metadata, to: nan)
        assertFails(try run(tinyRun(data, out) + ["--model", "moe", "--init", nan.path]), status: 1,
                    says: [nan.path, "'\(firstName)'", "nan", "finite"], "--init with NaN")
    }
}

final class DamagedInputGPTTests: CommandLineTestCase {
    override class var program: String { "gpt-moe" }

    private let tiny = ["--synthetic", "--synthetic-chars", "3000", "--layers", "2", "--width", "16", "--heads", "2",
                        "--context", "16", "--batch-size", "4", "--experts", "4", "--steps", "2", "--eval-interval", "2",
                        "--eval-windows", "4", "--length", "5", "--threads", "1"]

    func testEmptyValuesDevicesAndSizes() throws {
        let out = try temporaryDirectory("out")
        for flag in ["--text", "--out"] {
            assertFails(try run([flag, ""]), status: 2, says: ["\(flag) needs a value, got an empty one"], "\(flag) \"\"")
        }
        assertFails(try run(["sample", "--checkpoint", ""]), status: 2, says: ["--checkpoint needs a value"], "--checkpoint \"\"")
        assertFails(try run(["--text", "/dev/zero", "--out", out.path]), status: 1,
                    says: ["/dev/zero", "not a regular file (a character device)"], "--text /dev/zero")
        assertFails(try run(["sample", "--checkpoint", "/dev/zero"]), status: 1, says: ["/dev/zero", "character device"],
                    "--checkpoint /dev/zero")
        assertFails(try run(tiny + ["--balance", "switch,", "--out", out.path]), status: 2, says: ["--balance"], "--balance switch,")
        assertFails(try run(tiny + ["--width", "8192", "--layers", "64", "--heads", "8", "--out", out.path]), status: 2,
                    says: ["needs about", "billion parameters", "memory budget", "--width"], "--width 8192 --layers 64")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path), [], "nothing written")
    }
}

final class DamagedInputBenchTests: CommandLineTestCase {
    override class var program: String { "moe-bench" }

    /// `--only` needs matmul, step or pretrained; without one it used to run everything.
    func testOnlyNeedsASection() throws {
        assertFails(try run(["--only"]), status: 2, says: ["--only needs a value"], "--only")
        assertFails(try run(["--only", "everything"]), status: 2, says: ["--only must be matmul, step or pretrained"], "--only everything")
        assertFails(try run(["--json", "--fast"]), status: 2, says: ["unknown option '--fast'", "--help"], "--fast")
    }
}
