// What every test file shares: where the data sets are, and a quiet print.
//
// Data. The tests that need MNIST look where a user keeps it, in this order:
// $MNIST_DIR, ./data/mnist in the repository (where `swift run mnist-moe`
// downloads it), then ../shared/data/mnist beside the clone. When none has
// the four .gz files, those tests skip with one line that says how to enable
// them.
//
// Quiet. `swift test` prints only what XCTest prints; the diagnostics a test
// can show (gradient-check tables, timings, messages it checked) go through
// `note`, which prints them only with MOE_TEST_VERBOSE=1 in the environment.
import Foundation
import XCTest
import MoE

enum TestData {
    /// The repository root (this file is Tests/MoETests/TestSupport.swift).
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Where MNIST may be, in the order searched.
    static var mnistCandidates: [URL] {
        var folders: [URL] = []
        if let dir = ProcessInfo.processInfo.environment["MNIST_DIR"], !dir.isEmpty {
            folders.append(URL(fileURLWithPath: dir, isDirectory: true).standardizedFileURL)
        }
        folders.append(root.appendingPathComponent("data/mnist").standardizedFileURL)
        folders.append(root.appendingPathComponent("../shared/data/mnist").standardizedFileURL)
        return folders
    }

    /// The first candidate holding all four MNIST files, or nil.
    static let mnistFolder: URL? = mnistCandidates.first { MNIST.missingFiles(in: $0).isEmpty }

    /// The skip of a test that needs MNIST, in one line.
    static var mnistSkip: XCTSkip {
        XCTSkip("MNIST not found in " + mnistCandidates.map(\.path).joined(separator: ", ") +
                "; to run this test, set MNIST_DIR or run `swift run mnist-moe --epochs 1` once (it downloads to ./data/mnist)")
    }

    /// The MNIST folder, or a skip that says how to enable the test.
    static func requireMNIST() throws -> URL {
        guard let folder = mnistFolder else { throw mnistSkip }
        return folder
    }

    /// MOE_TEST_VERBOSE=1: print the tests' diagnostics.
    static let verbose = ProcessInfo.processInfo.environment["MOE_TEST_VERBOSE"].map { $0 != "" && $0 != "0" } ?? false
}

/// A test's diagnostic line: printed only with MOE_TEST_VERBOSE=1.
func note(_ item: @autoclosure () -> Any) {
    if TestData.verbose { print(item()) }
}

/// Checks that `model` is causal: its logits at position t do not change when
/// any later token changes. Draws 8 tokens of a 13-word vocabulary from `rng`,
/// then, for every cut, replaces all tokens after it and compares the logits
/// up to it [cut + 1, 13] bit for bit. Used for the GPT as built
/// (GPTLayerTests) and for every router a decoder accepts (RouterRegistryTests).
func assertCausal(_ model: GPT, rng: inout Xoshiro256, _ label: String,
                  file: StaticString = #filePath, line: UInt = #line) {
    let (t, v) = (8, 13)
    let tokens = (0..<t).map { _ in rng.below(v) }
    let before = model.forward(tokens: tokens, batch: 1)          // [T, V]
    for cut in 0..<(t - 1) {
        var changed = tokens
        for i in (cut + 1)..<t { changed[i] = (changed[i] + 1 + rng.below(v - 1)) % v }
        let after = model.forward(tokens: changed, batch: 1)
        XCTAssertEqual(Array(after.data[0..<((cut + 1) * v)]), Array(before.data[0..<((cut + 1) * v)]),
                       "\(label): position \(cut) saw later tokens", file: file, line: line)
    }
}
